//! The figures of the sections that report more than rows: what they are, for the JSON and
//! the notes. How each is measured (and its summary line) stays with its section.

use launcher::Failover;
use serde::Serialize;

use super::{format_millis, Row};

/// Fresh checkouts at one concurrency on the system with Patroni clusters against the same on
/// the system with one server per database.
#[derive(Debug, Clone, Serialize)]
pub struct HaRatio {
    pub clients: usize,
    pub single_per_second: Option<f64>,
    pub ha_per_second: Option<f64>,
    /// HA/single checkouts per second.
    pub ratio: Option<f64>,
    pub single_p50_ms: Option<f64>,
    pub ha_p50_ms: Option<f64>,
    pub single_p99_ms: Option<f64>,
    pub ha_p99_ms: Option<f64>,
}

impl HaRatio {
    pub fn new(clients: usize, single: &Row, ha: &Row) -> Self {
        let ratio = match (ha.per_second, single.per_second) {
            (Some(ha), Some(single)) if single > 0.0 => Some(ha / single),
            _ => None,
        };
        HaRatio {
            clients,
            single_per_second: single.per_second,
            ha_per_second: ha.per_second,
            ratio,
            single_p50_ms: single.p50_ms,
            ha_p50_ms: ha.p50_ms,
            single_p99_ms: single.p99_ms,
            ha_p99_ms: ha.p99_ms,
        }
    }

    /// E.g. `ratio HA/single at 16 clients: 0.712 (412 vs 579 checkouts/s; p50 30.1 vs
    /// 21.0 ms, p99 95.2 vs 60.3 ms)`.
    pub fn note(&self) -> String {
        let rate = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        let millis = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_millis);
        format!(
            "ratio HA/single at {} clients: {} ({} vs {} checkouts/s; p50 {} vs {} ms, \
             p99 {} vs {} ms)",
            self.clients,
            self.ratio
                .map_or_else(|| "n/a".to_owned(), |ratio| format!("{ratio:.3}")),
            rate(self.ha_per_second),
            rate(self.single_per_second),
            millis(self.ha_p50_ms),
            millis(self.single_p50_ms),
            millis(self.ha_p99_ms),
            millis(self.single_p99_ms),
        )
    }
}

/// One database's failover, from [`launcher::System::failover`].
#[derive(Debug, Clone, Serialize)]
pub struct FailoverFigures {
    pub database: &'static str,
    pub killed: String,
    pub new_primary: String,
    /// From the SIGKILL of the primary to the first successful write.
    pub write_unavailable_seconds: f64,
    /// From the SIGKILL until the killed node, started again, streams from the new primary.
    pub rejoined_after_seconds: f64,
}

impl FailoverFigures {
    pub fn new(database: &'static str, failover: &Failover) -> Self {
        FailoverFigures {
            database,
            killed: failover.killed.clone(),
            new_primary: failover.new_primary.clone(),
            write_unavailable_seconds: failover.write_unavailable.as_secs_f64(),
            rejoined_after_seconds: failover.rejoined_after.as_secs_f64(),
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {} killed, {} primary; writes unavailable {:.2} s, {} streaming again after \
             {:.2} s",
            self.database,
            self.killed,
            self.new_primary,
            self.write_unavailable_seconds,
            self.killed,
            self.rejoined_after_seconds
        )
    }
}

/// What `--ha` measured, also in the rows and notes; here for readers of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HaFigures {
    pub checkout: Vec<HaRatio>,
    pub failovers: Vec<FailoverFigures>,
}

impl HaFigures {
    pub(super) fn is_empty(&self) -> bool {
        self.checkout.is_empty() && self.failovers.is_empty()
    }
}

/// One fault's figures, in the JSON's `faults` list.
#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    pub fault: String,
    pub clients: usize,
    /// Successful checkouts per second from the start of the run to the kill.
    pub rate_before: f64,
    /// Successful checkouts in each 1 s window from the kill on.
    pub windows_after: Vec<u64>,
    /// The smallest of them.
    pub worst_window: u64,
    /// Seconds from the kill to the end of the last window below the section's recovered fraction of
    /// `rate_before`; `None` if the run ended below it.
    pub back_after_seconds: Option<u64>,
}

/// One overload run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadFigures {
    pub clients: usize,
    pub seconds: f64,
    pub checkouts_per_second: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Any 2xx (a checkout answers 200).
    pub status_200: u64,
    pub status_400: u64,
    pub status_409: u64,
    pub status_503: u64,
    /// 5xx other than 503.
    pub status_5xx: u64,
    /// Other non-2xx statuses.
    pub status_other: u64,
    pub connection_errors: u64,
    pub timeouts: u64,
    pub find_p50_ms: Option<f64>,
    pub find_p99_ms: Option<f64>,
    pub find_per_second: f64,
    /// `find` calls that were not 2xx or got no answer.
    pub find_not_ok: u64,
    /// Checkouts per second here over those at 64 clients (the last run only).
    pub ratio_to_64: Option<f64>,
}
