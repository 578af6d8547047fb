//! The set of transactions this process is deciding or finishing right now (recovery's `A`),
//! and the outcomes it reached lately, so that a caller whose reply was lost learns the true
//! one, with its reason, from memory.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use service_kit::sync::lock;
use tokio::sync::watch;
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
    /// Each running transaction with the channel its outcome is announced on.
    running: Mutex<HashMap<Uuid, watch::Sender<Option<Outcome>>>>,
    outcomes: Mutex<Outcomes>,
}

#[derive(Default)]
struct Outcomes {
    by_txid: HashMap<Uuid, Outcome>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, Uuid)>,
}

pub enum Start {
    Started,
    /// A repeat of a transaction that is running: it can wait for the first run's outcome.
    AlreadyRunning(Running),
}

/// A view of a running transaction's outcome.
pub struct Running(watch::Receiver<Option<Outcome>>);

impl Running {
    /// The transaction's outcome once it has one, or `None` if it has none within `limit`.
    pub async fn outcome(mut self, limit: Duration) -> Option<Outcome> {
        let announced = tokio::time::timeout(limit, self.0.wait_for(Option::is_some)).await;
        match announced {
            Ok(Ok(outcome)) => outcome.clone(),
            _ => None,
        }
    }
}

impl InFlight {
    pub fn start(&self, txid: Uuid) -> Start {
        let mut running = lock(&self.running);
        if let Some(announce) = running.get(&txid) {
            return Start::AlreadyRunning(Running(announce.subscribe()));
        }
        running.insert(txid, watch::Sender::new(None));
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
        Start::Started
    }

    /// Ends `txid`, remembering its outcome and announcing it to repeats waiting for it.
    pub fn end(&self, txid: Uuid, outcome: Outcome) {
        self.remember(txid, outcome.clone());
        let mut running = lock(&self.running);
        if let Some(announce) = running.remove(&txid) {
            announce.send_replace(Some(outcome));
        }
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
    }

    /// Announces `txid`'s outcome while it still runs (an abort is true once decided, while
    /// its branches are still being rolled back): status questions and repeats learn it at
    /// once, and recovery still leaves the transaction alone until it ends.
    pub fn decided(&self, txid: Uuid, outcome: Outcome) {
        self.remember(txid, outcome.clone());
        if let Some(announce) = lock(&self.running).get(&txid) {
            announce.send_replace(Some(outcome));
        }
    }

    pub fn contains(&self, txid: Uuid) -> bool {
        lock(&self.running).contains_key(&txid)
    }

    pub fn snapshot(&self) -> HashSet<Uuid> {
        lock(&self.running).keys().copied().collect()
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

#[cfg(test)]
mod tests {
    use twopc::wire::Refusal;

    use super::*;

    #[tokio::test]
    async fn a_decided_abort_is_told_at_once_and_the_transaction_runs_on() {
        let inflight = InFlight::default();
        let txid = Uuid::new_v4();
        assert!(matches!(inflight.start(txid), Start::Started));
        let Start::AlreadyRunning(repeat) = inflight.start(txid) else {
            panic!("a repeat of a running transaction starts nothing");
        };
        let aborted = Outcome::Aborted {
            participant: "stock".into(),
            refusal: Refusal::transient("unavailable", "stock did not answer"),
        };
        inflight.decided(txid, aborted.clone());
        assert_eq!(inflight.outcome(txid), Some(aborted.clone()));
        assert_eq!(
            repeat.outcome(Duration::from_secs(5)).await,
            Some(aborted.clone())
        );
        assert!(
            inflight.contains(txid),
            "still running: recovery leaves it alone"
        );
        inflight.end(txid, aborted.clone());
        assert!(!inflight.contains(txid));
        assert_eq!(inflight.outcome(txid), Some(aborted));
        assert_eq!(lock(&inflight.outcomes).order.len(), 1, "remembered once");
    }

    #[tokio::test]
    async fn an_ended_transaction_leaves_its_outcome_behind_and_tells_its_repeats() {
        let inflight = InFlight::default();
        let txid = Uuid::new_v4();
        assert!(matches!(inflight.start(txid), Start::Started));
        let Start::AlreadyRunning(early) = inflight.start(txid) else {
            panic!("a repeat of a running transaction starts nothing");
        };
        let Start::AlreadyRunning(impatient) = inflight.start(txid) else {
            panic!("a repeat of a running transaction starts nothing");
        };
        assert!(inflight.contains(txid));
        assert_eq!(inflight.outcome(txid), None);
        assert_eq!(impatient.outcome(Duration::from_millis(10)).await, None);
        let refused = Outcome::Aborted {
            participant: "stock".into(),
            refusal: Refusal::business("out_of_stock", "item 1 has 0 left"),
        };
        inflight.end(txid, refused.clone());
        assert!(!inflight.contains(txid));
        assert_eq!(inflight.outcome(txid), Some(refused.clone()));
        assert_eq!(early.outcome(Duration::from_secs(5)).await, Some(refused));
    }
}
