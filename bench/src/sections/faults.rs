//! `faults`: how long a single crash costs throughput. Fresh checkouts at 64 clients, their
//! successes counted in 1 s windows, while one process is killed, one run per fault:
//! `coordinator-1` (SIGKILL), then `order-1` (SIGKILL), then the stock database (SIGKILL to its
//! postmaster). Each run: the rate before the kill, the worst 1 s window after it, and the
//! seconds from the kill until the rate is back at 80 % of the rate before and stays there
//! (the end of the last window below; windows start at the kill, so 0 means no window fell
//! below). The aim: back within 3 s for every fault.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use launcher::Service;
use reqwest::Method;

use super::{Bench, EachOnce};
use crate::gateway::Requests;
use crate::load::{self, Load, Outcome};
use crate::report::{FaultFigures, Report, Row};
use crate::sections::Section;

/// Concurrent clients.
const CLIENTS: usize = 64;
/// A window counts as recovered at this fraction of the rate before the kill.
const BACK_AT: f64 = 0.8;

/// What is killed.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(Service),
    Postmaster(Service),
}

impl Fault {
    const ALL: [Fault; 3] = [
        Fault::Kill(Service::Coordinator),
        Fault::Kill(Service::Order),
        Fault::Postmaster(Service::Stock),
    ];

    fn label(self) -> String {
        match self {
            Fault::Kill(service) => format!("kill -9 {}", service.instance_process(1)),
            Fault::Postmaster(service) => format!("kill -9 the {} postmaster", service.name()),
        }
    }

    fn inject(self, bench: &Bench) -> anyhow::Result<()> {
        match self {
            Fault::Kill(service) => bench.system.kill(&service.instance_process(1)).map(drop),
            Fault::Postmaster(service) => bench.system.kill_postmaster(service).map(drop),
        }
        .map_err(Into::into)
    }
}

impl FaultFigures {
    fn new(fault: String, rate_before: f64, windows_after: Vec<u64>) -> Self {
        let worst_window = windows_after.iter().copied().min().unwrap_or(0);
        let below = |count: &u64| (*count as f64) < BACK_AT * rate_before;
        let back_after_seconds = match windows_after.iter().rposition(below) {
            None => Some(0),
            Some(last) if last + 1 == windows_after.len() => None,
            Some(last) => Some(last as u64 + 1),
        };
        FaultFigures {
            fault,
            clients: CLIENTS,
            rate_before,
            windows_after,
            worst_window,
            back_after_seconds,
        }
    }

    pub fn summary(&self) -> String {
        let back = self.back_after_seconds.map_or_else(
            || "not back within the run".to_owned(),
            |s| format!("back to 80 % after {s} s"),
        );
        format!(
            "faults: {}: {:.0} checkouts/s before, worst 1 s window {}/s, {back} (windows {:?})",
            self.fault, self.rate_before, self.worst_window, self.windows_after
        )
    }
}

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    bench.loaded.orders_unpaid = false;
    // Long enough before the kill for a steady rate, and after it for the recovery and a few
    // seconds of the rate regained.
    let (before, after) = if bench.scale.quick {
        (Duration::from_secs(3), Duration::from_secs(6))
    } else {
        (Duration::from_secs(5), Duration::from_secs(10))
    };
    let orders = EachOnce::new(&(0..bench.scale.rows));
    for fault in Fault::ALL {
        let label = fault.label();
        let successes = Arc::new(Mutex::new(Vec::new()));
        let gateway = bench.gateway.clone();
        let load = Load {
            label: format!("faults: {label}"),
            clients: CLIENTS,
            duration: Some(before + after),
        };
        let started = Instant::now();
        let run = load::run(&load, {
            let orders = orders.clone();
            let successes = successes.clone();
            move || {
                let gateway = gateway.clone();
                let successes = successes.clone();
                let path = orders.take().map(|id| format!("/orders/checkout/{id}"));
                async move {
                    let outcome = gateway.call(Method::POST, &path?).await;
                    if outcome == Outcome::Ok {
                        // Nothing panics while holding the lock, so it is never poisoned.
                        if let Ok(mut successes) = successes.lock() {
                            successes.push(Instant::now());
                        }
                    }
                    Some(outcome)
                }
            }
        });
        let strike = async {
            // The moment of the kill is part of the measurement, not a wait for a condition.
            tokio::time::sleep(before).await;
            let at = Instant::now();
            eprintln!("{label}");
            fault.inject(bench).map(|()| at)
        };
        let (stats, killed_at) = tokio::join!(run, strike);
        let (stats, killed_at) = (stats?, killed_at?);
        let successes = successes
            .lock()
            .map(|successes| successes.clone())
            .unwrap_or_default();
        let before_kill = successes.iter().filter(|at| **at < killed_at).count();
        let rate_before = before_kill as f64 / (killed_at - started).as_secs_f64();
        let windows: Vec<u64> = (0..after.as_secs())
            .map(|second| {
                let from = killed_at + Duration::from_secs(second);
                let to = from + Duration::from_secs(1);
                successes
                    .iter()
                    .filter(|at| **at >= from && **at < to)
                    .count() as u64
            })
            .collect();
        let figures = FaultFigures::new(label.clone(), rate_before, windows);
        report.note(figures.summary());
        report.add(Row::load(
            Section::Faults,
            format!("fresh checkouts, {label} after {} s", before.as_secs()),
            CLIENTS,
            &stats,
        ));
        report.add_fault(figures);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_ends_with_the_last_window_below_80_percent_of_the_rate_before() {
        let figures = FaultFigures::new("x".into(), 300.0, vec![250, 12, 100, 239, 240, 310]);
        assert_eq!(figures.worst_window, 12);
        assert_eq!(figures.back_after_seconds, Some(4));
        let never = FaultFigures::new("x".into(), 300.0, vec![300, 0]);
        assert_eq!(never.back_after_seconds, None);
        let unharmed = FaultFigures::new("x".into(), 300.0, vec![290, 300]);
        assert_eq!(unharmed.back_after_seconds, Some(0));
    }
}
