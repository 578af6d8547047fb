//! What a run prints: the plan as a table, hazards, JSON for machines.

use std::fmt;

use super::error::CliError;
use crate::{
    log,
    recovery::{Item, Plan},
};

/// True while anything is left to resolve (exit status 1).
pub(super) fn in_doubt(plan: &Plan) -> bool {
    !plan.items.is_empty() || !plan.unreachable.is_empty()
}

pub(super) fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Usage(format!("cannot serialize output: {error}")))?;
    println!("{text}");
    Ok(())
}

struct Age(Option<f64>);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some(s) if s < 120.0 => write!(f, "{s:.0}s"),
            Some(s) if s < 7_200.0 => write!(f, "{:.0}m", s / 60.0),
            Some(s) => write!(f, "{:.1}h", s / 3_600.0),
        }
    }
}

fn marker_text(item: &Item) -> &'static str {
    match item.marker {
        Some(true) => "present",
        Some(false) => "absent",
        None => "-",
    }
}

/// The plan as a table, one in-doubt branch a line.
pub(super) fn print_plan(plan: &Plan) {
    if plan.items.is_empty() {
        println!("nothing in doubt");
    } else {
        let width = plan.items.iter().map(|i| i.gid.len()).max().unwrap_or(3);
        println!(
            "{:<width$}  {:<12}  {:>6}  {:<9}  {:<7}  ACTION",
            "GID", "PARTICIPANT", "AGE", "LOG", "MARKER"
        );
        for item in &plan.items {
            println!(
                "{:<width$}  {:<12}  {:>6}  {:<9}  {:<7}  {}",
                item.gid,
                item.participant,
                Age(item.age_seconds).to_string(),
                item.log.to_string(),
                marker_text(item),
                item.action
            );
        }
    }
    if !plan.finishable.is_empty() {
        println!(
            "{} decision record(s) only need marking finished",
            plan.finishable.len()
        );
    }
    print_unreachable(plan);
}

pub(super) fn print_unreachable(plan: &Plan) {
    for name in &plan.unreachable {
        println!("participant {name} could not be listed");
    }
}

/// Hazards recorded and found now, as `hazards --json` prints them.
#[derive(serde::Serialize)]
pub(super) struct HazardReport {
    /// Hazards recorded by the coordinator or earlier runs and not resolved.
    pub(super) recorded: Vec<log::Hazard>,
    /// Hazards a fresh plan finds now (also those not recorded yet).
    pub(super) found_now: Vec<Item>,
}

impl HazardReport {
    pub(super) fn any(&self) -> bool {
        !self.recorded.is_empty() || !self.found_now.is_empty()
    }

    /// One line per hazard, recorded ones first; a hazard found now that is also recorded is
    /// shown once.
    pub(super) fn print(&self) {
        if !self.any() {
            println!("no hazards");
            return;
        }
        for hazard in &self.recorded {
            println!(
                "{}  {}  recorded {}",
                hazard.gid,
                hazard.participant,
                hazard.detected_at.to_rfc3339()
            );
        }
        for item in self
            .found_now
            .iter()
            .filter(|i| !self.recorded.iter().any(|h| h.gid == i.gid))
        {
            println!("{}  {}  found now", item.gid, item.participant);
        }
    }
}
