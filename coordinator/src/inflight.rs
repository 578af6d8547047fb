//! The set of transactions this process is deciding or finishing right now (recovery's `A`),
//! and the transactions it has declared aborted to a client that lost its reply.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::telemetry;

/// How long an "aborted" answer for an unknown txid bars that txid from starting.
const SETTLED_MEMORY: Duration = Duration::from_secs(600);

#[derive(Default)]
pub struct InFlight {
    running: Mutex<HashSet<Uuid>>,
    settled: Mutex<HashMap<Uuid, Instant>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    AlreadyRunning,
    /// A status query already answered "aborted" for this txid; starting it now would
    /// contradict that answer.
    AlreadySettled,
}

impl InFlight {
    pub fn start(&self, txid: Uuid) -> Start {
        // Same lock order as `settle_unknown`: running, then settled.
        let mut running = self.lock_running();
        if self.lock_settled().contains_key(&txid) {
            return Start::AlreadySettled;
        }
        if !running.insert(txid) {
            return Start::AlreadyRunning;
        }
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
        Start::Started
    }

    pub fn end(&self, txid: Uuid) {
        let mut running = self.lock_running();
        running.remove(&txid);
        metrics::gauge!(telemetry::IN_FLIGHT).set(running.len() as f64);
    }

    pub fn contains(&self, txid: Uuid) -> bool {
        self.lock_running().contains(&txid)
    }

    pub fn snapshot(&self) -> HashSet<Uuid> {
        self.lock_running().clone()
    }

    /// Records that `txid` was reported aborted because this process does not know it; returns
    /// false if it started meanwhile (then the caller must report it as pending).
    pub fn settle_unknown(&self, txid: Uuid) -> bool {
        let running = self.lock_running();
        if running.contains(&txid) {
            return false;
        }
        let mut settled = self.lock_settled();
        let now = Instant::now();
        settled.retain(|_, at| now.duration_since(*at) < SETTLED_MEMORY);
        settled.insert(txid, now);
        true
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_settled(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Instant>> {
        self.settled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
