//! Crash points for tests.
//!
//! `COORDINATOR_FAILPOINT=<name>[@<n>]` makes the coordinator exit hard the `n`-th time (default
//! the first) it reaches the point `name`. Points: `after_first_prepare`, `before_decision`,
//! `after_decision`, `mid_phase_two`. Two points hold instead of exiting: at
//! `hold_after_decision` the `n`-th transaction, right after its commit decision is durable,
//! waits [`DECISION_HOLD`] before phase two (its caller can be killed meanwhile); at
//! `hold_branch_commit` the `n`-th branch commit of phase two waits [`BRANCH_COMMIT_HOLD`]
//! (a participant database slow to commit). Only debug builds read the variable; release
//! builds compile every point to nothing.

#[cfg(debug_assertions)]
mod imp {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    };

    pub const VAR: &str = "COORDINATOR_FAILPOINT";

    struct Armed {
        name: String,
        remaining: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let raw = std::env::var(VAR).ok()?;
                let (name, nth) = match raw.split_once('@') {
                    Some((name, nth)) => (name.to_owned(), nth.parse().unwrap_or(1)),
                    None => (raw, 1),
                };
                Some(Armed {
                    name,
                    remaining: AtomicU64::new(nth),
                })
            })
            .as_ref()
    }

    /// True exactly the `n`-th time the armed point `point` is reached.
    pub fn reached(point: &str) -> bool {
        let Some(armed) = armed() else { return false };
        armed.name == point && armed.remaining.fetch_sub(1, Ordering::SeqCst) == 1
    }

    pub fn hit(point: &str) {
        if reached(point) {
            eprintln!("failpoint {point}: exiting hard");
            std::process::exit(101);
        }
    }
}

/// How long [`HOLD_AFTER_DECISION`] holds: long enough to kill the caller meanwhile.
pub const DECISION_HOLD: std::time::Duration = std::time::Duration::from_secs(5);
/// How long [`HOLD_BRANCH_COMMIT`] holds: past the reply wait of a checkout (its phase-one
/// deadline, 5 s, plus the phase-two wait, 3 s), well inside its budget (20 s).
pub const BRANCH_COMMIT_HOLD: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits `duration` when the test armed this point.
pub async fn hold(point: &str, duration: std::time::Duration) {
    #[cfg(debug_assertions)]
    if imp::reached(point) {
        eprintln!("failpoint {point}: holding for {duration:?}");
        tokio::time::sleep(duration).await;
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, duration);
}

/// Exits the process hard when the test armed this point.
#[inline]
pub fn hit(point: &str) {
    #[cfg(debug_assertions)]
    imp::hit(point);
    #[cfg(not(debug_assertions))]
    let _ = point;
}

pub const AFTER_FIRST_PREPARE: &str = "after_first_prepare";
pub const BEFORE_DECISION: &str = "before_decision";
pub const AFTER_DECISION: &str = "after_decision";
pub const MID_PHASE_TWO: &str = "mid_phase_two";
pub const HOLD_AFTER_DECISION: &str = "hold_after_decision";
pub const HOLD_BRANCH_COMMIT: &str = "hold_branch_commit";
