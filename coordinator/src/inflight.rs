//! The set of transactions this process is deciding or finishing right now (recovery's `A`),
//! and the outcomes it reached lately, so that a caller whose reply was lost learns the true
//! one, with its reason, from memory.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use twopc::wire::Outcome;
use uuid::Uuid;

use crate::telemetry;

/// How long an outcome is remembered: far longer than any caller follows a transaction (the
/// order service's checkout budget is 20 s).
pub const OUTCOME_MEMORY: Duration = Duration::from_secs(600);
/// Most outcomes remembered (about 100 bytes each).
const MAX_OUTCOMES: usize = 200_000;

#[derive(Default)]
pub struct InFlight {
    running: Mutex<HashSet<Uuid>>,
    outcomes: Mutex<Outcomes>,
}

#[derive(Default)]
struct Outcomes {
    by_txid: HashMap<Uuid, Outcome>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, Uuid)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    AlreadyRunning,
}

impl InFlight {
    pub fn start(&self, txid: Uuid) -> Start {
        let mut running = lock(&self.running);
        if !running.insert(txid) {
            return Start::AlreadyRunning;
        }
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
        Start::Started
    }

    /// Ends `txid`, remembering its outcome.
    pub fn end(&self, txid: Uuid, outcome: Outcome) {
        self.remember(txid, outcome);
        let mut running = lock(&self.running);
        running.remove(&txid);
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
    }

    pub fn contains(&self, txid: Uuid) -> bool {
        lock(&self.running).contains(&txid)
    }

    pub fn snapshot(&self) -> HashSet<Uuid> {
        lock(&self.running).clone()
    }

    /// The outcome `txid` reached in this process lately, if it has one.
    pub fn outcome(&self, txid: Uuid) -> Option<Outcome> {
        lock(&self.outcomes).by_txid.get(&txid).cloned()
    }

    fn remember(&self, txid: Uuid, outcome: Outcome) {
        let mut outcomes = lock(&self.outcomes);
        let now = Instant::now();
        while let Some(&(at, old)) = outcomes.order.front() {
            if now.duration_since(at) < OUTCOME_MEMORY && outcomes.order.len() < MAX_OUTCOMES {
                break;
            }
            outcomes.order.pop_front();
            outcomes.by_txid.remove(&old);
        }
        if outcomes.by_txid.insert(txid, outcome).is_none() {
            outcomes.order.push_back((now, txid));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use twopc::wire::Refusal;

    use super::*;

    #[test]
    fn an_ended_transaction_leaves_its_outcome_behind() {
        let inflight = InFlight::default();
        let txid = Uuid::new_v4();
        assert_eq!(inflight.start(txid), Start::Started);
        assert_eq!(inflight.start(txid), Start::AlreadyRunning);
        assert!(inflight.contains(txid));
        assert_eq!(inflight.outcome(txid), None);
        let refused = Outcome::Aborted {
            participant: "stock".into(),
            refusal: Refusal::business("out_of_stock", "item 1 has 0 left"),
        };
        inflight.end(txid, refused.clone());
        assert!(!inflight.contains(txid));
        assert_eq!(inflight.outcome(txid), Some(refused));
    }
}
