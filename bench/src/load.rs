//! The load generator: N concurrent workers calling one operation in a loop until a deadline
//! passes or the operation runs out of work, each call timed.
//!
//! Every latency is kept, and percentiles are read from the sorted list (nearest rank), not
//! estimated. A line of progress goes to stderr every second.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx (or a committed transaction).
    Ok,
    /// A non-2xx status. The ceiling reports a business refusal as 400, as the API would.
    Rejected(u16),
    /// No answer: connection error, database error.
    Failed,
    /// No answer within the client's timeout.
    TimedOut,
}

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Load {
    /// Shown in the progress lines.
    pub label: String,
    pub clients: usize,
    /// `None`: until the operation runs out of work.
    pub duration: Option<Duration>,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Stats {
    /// From the start until the last worker finished its last call.
    pub elapsed: Duration,
    /// Every call's latency, sorted.
    pub latencies: Vec<Duration>,
    pub ok: u64,
    /// Non-2xx replies by status.
    pub rejected: BTreeMap<u16, u64>,
    pub failed: u64,
    pub timed_out: u64,
}

impl Stats {
    /// Calls made.
    pub fn count(&self) -> u64 {
        self.latencies.len() as u64
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Calls per second over the whole run.
    pub fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.count() as f64 / seconds
        } else {
            0.0
        }
    }

    /// The latency below which `fraction` of the calls finished (nearest rank).
    pub fn percentile(&self, fraction: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = (fraction * self.latencies.len() as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }
}

/// Runs `operation` from `load.clients` workers. The operation returns `None` when there is
/// no work left (e.g. every order was taken); a worker then stops.
pub async fn run<F, Fut>(load: &Load, operation: F) -> anyhow::Result<Stats>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Outcome>> + Send + 'static,
{
    let operation = Arc::new(operation);
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = load.duration.map(|duration| start + duration);
    let progress = tokio::spawn(report_progress(load.label.clone(), done.clone(), start));

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..load.clients {
        let operation = operation.clone();
        let done = done.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut outcomes = Vec::new();
            while deadline.is_none_or(|deadline| Instant::now() < deadline) {
                let began = Instant::now();
                let Some(outcome) = operation().await else {
                    break;
                };
                latencies.push(began.elapsed());
                outcomes.push(outcome);
                done.fetch_add(1, Ordering::Relaxed);
            }
            (latencies, outcomes)
        });
    }

    let mut stats = Stats {
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        ok: 0,
        rejected: BTreeMap::new(),
        failed: 0,
        timed_out: 0,
    };
    while let Some(joined) = workers.join_next().await {
        let (latencies, outcomes) = joined.context("a load worker panicked")?;
        stats.latencies.extend(latencies);
        for outcome in outcomes {
            match outcome {
                Outcome::Ok => stats.ok += 1,
                Outcome::Rejected(status) => *stats.rejected.entry(status).or_default() += 1,
                Outcome::Failed => stats.failed += 1,
                Outcome::TimedOut => stats.timed_out += 1,
            }
        }
    }
    stats.elapsed = start.elapsed();
    progress.abort();
    stats.latencies.sort_unstable();
    Ok(stats)
}

async fn report_progress(label: String, done: Arc<AtomicU64>, start: Instant) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        ticks.tick().await;
        let done = done.load(Ordering::Relaxed);
        let seconds = start.elapsed().as_secs_f64();
        eprintln!(
            "  {label}: {seconds:5.1} s, {done} done ({:.0}/s)",
            done as f64 / seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(millis: &[u64]) -> Stats {
        Stats {
            elapsed: Duration::from_secs(1),
            latencies: millis.iter().map(|m| Duration::from_millis(*m)).collect(),
            ok: millis.len() as u64,
            rejected: BTreeMap::new(),
            failed: 0,
            timed_out: 0,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_of_the_sorted_latencies() {
        let stats = stats_of(&(1..=100).collect::<Vec<_>>());
        assert_eq!(stats.percentile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(stats.percentile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(stats.percentile(1.0), Some(Duration::from_millis(100)));
        assert_eq!(
            stats_of(&[7]).percentile(0.99),
            Some(Duration::from_millis(7))
        );
        assert_eq!(stats_of(&[]).percentile(0.5), None);
    }

    #[tokio::test]
    async fn a_run_stops_when_the_work_runs_out() {
        let next = Arc::new(AtomicU64::new(0));
        let load = Load {
            label: "test".into(),
            clients: 4,
            duration: None,
        };
        let stats = run(&load, move || {
            let id = next.fetch_add(1, Ordering::Relaxed);
            async move {
                match id {
                    0..=9 => Some(Outcome::Ok),
                    10..=12 => Some(Outcome::Rejected(400)),
                    13 => Some(Outcome::Failed),
                    _ => None,
                }
            }
        })
        .await
        .expect("run");
        assert_eq!(stats.count(), 14);
        assert_eq!((stats.ok, stats.rejected_total(), stats.failed), (10, 3, 1));
    }
}
