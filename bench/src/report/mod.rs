//! The results: the machine they were measured on, one row per measurement, notes (ratios,
//! sanity counts, failures); printed as an aligned table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

mod figures;
mod machine;

pub use crate::cpu::CpuCost;
use crate::load::Stats;
use crate::section::Section;
pub use figures::{FailoverFigures, FaultFigures, HaFigures, HaRatio, OverloadFigures};
pub use machine::{load_average, Machine};

/// How the run was configured.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub phase_seconds: f64,
    pub rows: i64,
    pub stress_clients: usize,
    /// `--ha`: the sections after `checkout` ran on a second system with Patroni clusters.
    pub ha: bool,
    pub sections: Vec<&'static str>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: &'static str,
    pub measurement: String,
    pub clients: Option<usize>,
    /// Requests, transactions or rows.
    pub count: Option<u64>,
    pub seconds: f64,
    pub per_second: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub non_2xx: Option<u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub non_2xx_by_status: BTreeMap<u16, u64>,
    /// No answer at all (connection errors, timeouts, database errors).
    pub failed: Option<u64>,
}

impl Row {
    /// A single timed step (a `batch_init`, a set-up phase).
    pub fn timing(
        section: Section,
        measurement: String,
        rows: Option<u64>,
        took: Duration,
    ) -> Self {
        Row {
            section: section.name(),
            measurement,
            clients: None,
            count: rows,
            seconds: took.as_secs_f64(),
            per_second: None,
            p50_ms: None,
            p99_ms: None,
            non_2xx: None,
            non_2xx_by_status: BTreeMap::new(),
            failed: None,
        }
    }

    /// A load run.
    pub fn load(section: Section, measurement: String, clients: usize, stats: &Stats) -> Self {
        let millis = |fraction| stats.percentile(fraction).map(|d| d.as_secs_f64() * 1e3);
        Row {
            section: section.name(),
            measurement,
            clients: Some(clients),
            count: Some(stats.count()),
            seconds: stats.elapsed.as_secs_f64(),
            per_second: Some(stats.per_second()),
            p50_ms: millis(0.50),
            p99_ms: millis(0.99),
            non_2xx: Some(stats.rejected_total()),
            non_2xx_by_status: stats.rejected.clone(),
            failed: Some(stats.failed + stats.timed_out),
        }
    }
}

/// A section that did not complete, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub section: &'static str,
    pub error: String,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "HaFigures::is_empty")]
    pub ha: HaFigures,
    /// The `faults` section: throughput around each kill.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultFigures>,
    /// CPU milliseconds per fresh checkout by process kind, per concurrency.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<CpuCost>,
    /// The `overload` section: statuses by run, `find` latency beside it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overload: Vec<OverloadFigures>,
}

impl Report {
    pub fn new(machine: Machine, settings: Settings) -> Self {
        Report {
            machine,
            settings,
            rows: Vec::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            ha: HaFigures::default(),
            faults: Vec::new(),
            cpu: Vec::new(),
            overload: Vec::new(),
        }
    }

    pub fn add_cpu(&mut self, cost: CpuCost) {
        self.cpu.push(cost);
    }

    pub fn add_overload(&mut self, figures: OverloadFigures) {
        self.overload.push(figures);
    }

    /// Records the ratio and notes it.
    pub fn add_ha_ratio(&mut self, ratio: HaRatio) {
        self.note(ratio.note());
        self.ha.checkout.push(ratio);
    }

    pub fn add_failover(&mut self, failover: FailoverFigures) {
        self.ha.failovers.push(failover);
    }

    pub fn add_fault(&mut self, figures: FaultFigures) {
        self.faults.push(figures);
    }

    pub fn add(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    pub fn fail(&mut self, section: Section, error: String) {
        self.failures.push(Failure {
            section: section.name(),
            error,
        });
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The line that says where and how the figures were taken.
    pub fn header(&self) -> String {
        let machine = &self.machine;
        let memory = machine
            .memory_gib
            .map_or_else(String::new, |gib| format!(", {gib} GiB"));
        format!(
            "wdm-bench {date}: nproc {nproc} ({cpu}{memory}), load average {load}, \
             commit {commit}; {seconds} s phases, {rows} rows{quick}, sections {sections}{ha}",
            date = machine.date,
            nproc = machine.nproc,
            load = machine.load_average,
            cpu = machine.cpu,
            commit = machine.commit,
            seconds = self.settings.phase_seconds,
            rows = self.settings.rows,
            quick = if self.settings.quick {
                " (--quick)"
            } else {
                ""
            },
            sections = self.settings.sections.join(","),
            ha = if self.settings.ha {
                " (ha-checkout and failover on Patroni clusters)"
            } else {
                ""
            },
        )
    }

    /// The rows as an aligned table, then the notes and failures.
    pub fn table(&self) -> String {
        const HEADINGS: [&str; 10] = [
            "section",
            "measurement",
            "clients",
            "count",
            "seconds",
            "per s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "failed",
        ];
        let cells: Vec<[String; 10]> = self.rows.iter().map(row_cells).collect();
        let mut widths = HEADINGS.map(str::len);
        for row in &cells {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String; 10]| {
            let mut text = String::new();
            for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
                // Text columns left-aligned, numbers right-aligned.
                let _ = if column < 2 {
                    write!(text, "{cell:<width$}  ")
                } else {
                    write!(text, "{cell:>width$}  ")
                };
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&HEADINGS.map(str::to_owned));
        line(&widths.map(|width| "-".repeat(width)));
        for row in &cells {
            line(row);
        }
        for cost in &self.cpu {
            out.push_str(&cost.table());
        }
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "FAILED {}: {}", failure.section, failure.error);
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(path, json + "\n")?;
        Ok(())
    }
}

fn row_cells(row: &Row) -> [String; 10] {
    let count = |value: Option<u64>| value.map_or_else(String::new, |n| n.to_string());
    let millis = |value: Option<f64>| value.map_or_else(String::new, format_millis);
    [
        row.section.to_owned(),
        row.measurement.clone(),
        row.clients.map_or_else(String::new, |n| n.to_string()),
        count(row.count),
        format!("{:.2}", row.seconds),
        row.per_second
            .map_or_else(String::new, |rate| format!("{rate:.0}")),
        millis(row.p50_ms),
        millis(row.p99_ms),
        count(row.non_2xx),
        count(row.failed),
    ]
}

/// Milliseconds with two decimals below 10, one above.
pub fn format_millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.1}")
    }
}
