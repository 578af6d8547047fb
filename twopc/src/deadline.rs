//! Deadlines that travel with a request.
//!
//! A deadline is a point in wall-clock time (milliseconds since the Unix epoch), not a
//! duration: a request that sat in a socket buffer while its receiver was stopped (`SIGSTOP`,
//! a paused container) must not get a fresh budget when it is finally read. Every process of
//! this system runs on one host or on hosts with synchronised clocks; the margins below are
//! far wider than NTP's skew.
//!
//! Deadlines nest outward: a participant's prepare ends by the transaction's deadline, the
//! coordinator answers by the caller's reply deadline, the order service answers its client
//! within its checkout budget, and the gateway's server timeout is above all of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How long after a deadline a step that was checked before it may still be finishing: the
/// gap between the last check and the statement it guards (`PREPARE TRANSACTION` right after
/// the marker's check, in one query string), with room for a descheduled process. Past
/// `deadline + SETTLE`, "not prepared" is final.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A point in wall-clock time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Deadline(u64);

impl Deadline {
    pub fn from_millis(epoch_millis: u64) -> Self {
        Self(epoch_millis)
    }

    pub fn after(budget: Duration) -> Self {
        Self(now_millis().saturating_add(budget.as_millis() as u64))
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Time left, or `None` once the deadline has passed.
    pub fn remaining(self) -> Option<Duration> {
        let now = now_millis();
        (self.0 > now).then(|| Duration::from_millis(self.0 - now))
    }

    pub fn has_passed(self) -> bool {
        self.remaining().is_none()
    }

    /// The earlier of the two.
    pub fn min(self, other: Self) -> Self {
        Self(self.0.min(other.0))
    }

    /// This deadline moved by `by` (later).
    pub fn plus(self, by: Duration) -> Self {
        Self(self.0.saturating_add(by.as_millis() as u64))
    }

    /// As a PostgreSQL `timestamptz` expression, for statements that check the deadline where
    /// they land. An integer formatted by us: safe to put into SQL text.
    pub fn sql_timestamp(self) -> String {
        format!("to_timestamp({}::double precision / 1000)", self.0)
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_counts_down_and_passes() {
        let soon = Deadline::after(Duration::from_secs(60));
        let left = soon.remaining().unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));
        assert!(!soon.has_passed());
        assert!(Deadline::from_millis(1).has_passed());
        assert_eq!(soon.min(Deadline::from_millis(1)), Deadline::from_millis(1));
        assert_eq!(
            Deadline::from_millis(1_000).plus(Duration::from_millis(500)),
            Deadline::from_millis(1_500)
        );
    }

    #[test]
    fn a_deadline_is_a_plain_number_on_the_wire_and_in_sql() {
        let deadline = Deadline::from_millis(1_700_000_000_123);
        assert_eq!(serde_json::to_string(&deadline).unwrap(), "1700000000123");
        assert_eq!(
            deadline.sql_timestamp(),
            "to_timestamp(1700000000123::double precision / 1000)"
        );
    }
}
