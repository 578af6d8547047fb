//! The durable decision log, with group commit and an identity lock.
//!
//! Commit decisions go through one dedicated connection that batches every decision waiting
//! at that moment into a single `INSERT` (one WAL flush for many checkouts). That connection
//! also holds a session advisory lock on the coordinator's identity for its whole life:
//!
//! * a second live process with the same identity waits at start-up instead of recovering
//!   (and rolling back) the first one's transactions;
//! * when a crashed incarnation is replaced, the new one gets the lock only after PostgreSQL
//!   has ended the old writer session, so every decision the old process sent is either
//!   committed or gone before the new one reads the log. Answers of "no record, presumed
//!   abort" about its own transactions are therefore final.
//!
//! Every commit decision carries its transaction's deadline and lands only before it: the
//! `INSERT` checks the database's clock row by row, so a decision delayed by retries, a stopped
//! process or a failover can never land late. Anyone else who needs a final answer about a
//! transaction (a peer coordinator, a status question, the CLI) writes an abort record under
//! its txid ([`DecisionLog::fence`]); the primary key decides between the two.

mod records;
mod writer;

use service_kit::tasks::Tasks;
use sqlx::{postgres::PgConnectOptions, ConnectOptions, PgPool};
use tokio::sync::{mpsc, oneshot};
use twopc::Deadline;
use uuid::Uuid;

pub use records::{
    fence, gc_finished, live_identities, lookup, mark_finished, open_hazards, record_hazard,
    record_operator_action, recorded, unfinished, unfinished_all, Hazard,
};
use writer::{PendingDecision, MAX_BATCH};

/// What the log says a transaction's outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    Commit,
    /// Fenced off: an abort record that no commit decision can overtake.
    Abort,
}

impl Fate {
    fn from_column(outcome: &str) -> Self {
        if outcome == "abort" {
            Fate::Abort
        } else {
            Fate::Commit
        }
    }
}

/// A decision as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub txid: Uuid,
    pub coordinator: String,
    pub participants: Vec<String>,
    pub decided_at: chrono::DateTime<chrono::Utc>,
    pub finished: bool,
    pub fate: Fate,
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct DecisionLog {
    coordinator: String,
    pool: PgPool,
    writer: mpsc::Sender<PendingDecision>,
    finisher: mpsc::UnboundedSender<Uuid>,
}

impl DecisionLog {
    /// Takes the identity lock (waiting for a previous incarnation to be gone), then starts
    /// the group-commit writer and the lazy finisher.
    /// Both tasks run under `tasks` and end once every handle to the log has been dropped,
    /// after writing what was sent before.
    pub async fn open(
        url: &str,
        coordinator: &str,
        pool: PgPool,
        tasks: &Tasks,
    ) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions =
            url.parse::<PgConnectOptions>()?.disable_statement_logging();
        let conn = writer::lock_identity(&options, coordinator).await?;
        let (writer, requests) = mpsc::channel(4 * MAX_BATCH);
        let (finisher, finished) = mpsc::unbounded_channel();
        tasks.spawn(writer::write_decisions(
            conn,
            options,
            coordinator.to_owned(),
            requests,
        ));
        tasks.spawn(writer::finish_decisions(pool.clone(), finished));
        Ok(Self {
            coordinator: coordinator.to_owned(),
            pool,
            writer,
            finisher,
        })
    }

    /// Forces a commit decision to disk, if it lands before `deadline`. Returns true once it
    /// is durable, false if it was refused (too late, or fenced off by someone else): then the
    /// transaction aborts. Retries through connection failures until the log answers; a retry
    /// after the deadline can only learn what an earlier attempt did, never log anew.
    pub async fn record_commit(
        &self,
        txid: Uuid,
        participants: &[String],
        deadline: Deadline,
    ) -> bool {
        let (durable, written) = oneshot::channel();
        let pending = PendingDecision {
            txid,
            participants: participants.join(","),
            deadline,
            durable,
        };
        if self.writer.send(pending).await.is_err() {
            // The writer task ended: the process is shutting down. Never return as if decided.
            std::future::pending::<()>().await;
        }
        match written.await {
            Ok(durable) => durable,
            Err(_) => std::future::pending().await,
        }
    }

    /// Makes the outcome of `txid` final: writes an abort record unless a commit decision is
    /// there first, and returns whichever is the log's answer now.
    pub async fn fence(&self, txid: Uuid) -> Result<Fate, sqlx::Error> {
        fence(&self.pool, txid, &self.coordinator).await
    }

    /// Marks a decision finished (every branch committed). Lazy and batched: losing it only
    /// costs recovery a look.
    pub fn finish(&self, txid: Uuid) {
        let _ = self.finisher.send(txid);
    }

    pub async fn lookup(&self, txid: Uuid) -> Result<Option<Decision>, sqlx::Error> {
        lookup(&self.pool, txid).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
