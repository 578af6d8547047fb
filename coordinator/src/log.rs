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

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use sqlx::{
    postgres::PgConnectOptions, ConnectOptions, Connection, Executor, PgConnection, PgPool, Row,
};
use tokio::sync::{mpsc, oneshot};
use twopc::Deadline;
use uuid::Uuid;

use crate::telemetry;

/// Longest wait for one forced decision write before the connection is replaced.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most decisions forced in one write.
const MAX_BATCH: usize = 512;

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

struct PendingDecision {
    txid: Uuid,
    participants: String,
    deadline: Deadline,
    /// True once the commit decision is durable; false when it was refused (its deadline had
    /// passed where it landed, or the transaction was fenced off first).
    durable: oneshot::Sender<bool>,
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
    pub async fn open(url: &str, coordinator: &str, pool: PgPool) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions =
            url.parse::<PgConnectOptions>()?.disable_statement_logging();
        let conn = lock_identity(&options, coordinator).await?;
        let (writer, requests) = mpsc::channel(4 * MAX_BATCH);
        let (finisher, finished) = mpsc::unbounded_channel();
        tokio::spawn(write_decisions(
            conn,
            options,
            coordinator.to_owned(),
            requests,
        ));
        tokio::spawn(finish_decisions(pool.clone(), finished));
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

async fn lock_identity(
    options: &PgConnectOptions,
    coordinator: &str,
) -> Result<PgConnection, sqlx::Error> {
    let mut conn = PgConnection::connect_with(options).await?;
    // A statement without arguments goes over the simple query protocol.
    conn.execute("set synchronous_commit = on").await?;
    let taken: bool = sqlx::query_scalar(
        "select pg_try_advisory_lock(hashtext('wdm-coordinator'), hashtext($1))",
    )
    .bind(coordinator)
    .fetch_one(&mut conn)
    .await?;
    if !taken {
        tracing::warn!(
            coordinator,
            "another process holds this coordinator identity; waiting for it to end"
        );
        sqlx::query("select pg_advisory_lock(hashtext('wdm-coordinator'), hashtext($1))")
            .bind(coordinator)
            .execute(&mut conn)
            .await?;
    }
    tracing::info!(coordinator, "identity lock taken");
    Ok(conn)
}

async fn write_decisions(
    mut conn: PgConnection,
    options: PgConnectOptions,
    coordinator: String,
    mut requests: mpsc::Receiver<PendingDecision>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let txids: Vec<Uuid> = batch.iter().map(|d| d.txid).collect();
        let participants: Vec<String> = batch.iter().map(|d| d.participants.clone()).collect();
        let deadlines: Vec<i64> = batch
            .iter()
            .map(|d| d.deadline.as_millis() as i64)
            .collect();
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut first_attempt = true;
        let committed = loop {
            let attempt = write_batch(&mut conn, &coordinator, &txids, &participants, &deadlines);
            // A write that hangs (a dead peer behind a proxy) is treated like a failed one: the
            // connection is replaced, and the retry cannot log a decision twice.
            let written = match tokio::time::timeout(WRITE_TIMEOUT, attempt).await {
                Ok(Ok(inserted)) if first_attempt => Ok(inserted),
                // After a failed attempt, a decision missing from this insert may have landed in
                // the earlier one: the log says which.
                Ok(Ok(_)) => committed_of(&mut conn, &txids).await,
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
            };
            match written {
                Ok(committed) => break committed,
                Err(error) => {
                    first_attempt = false;
                    tracing::error!(%error, decisions = txids.len(), "decision write failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    match lock_identity(&options, &coordinator).await {
                        Ok(fresh) => conn = fresh,
                        Err(error) => tracing::warn!(%error, "decision log unreachable"),
                    }
                }
            }
        };
        metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "decision", "participant" => "log")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::DECISION_BATCH).record(batch.len() as f64);
        for decision in batch {
            let durable = committed.contains(&decision.txid);
            if !durable {
                tracing::warn!(txid = %decision.txid, "commit decision refused: too late or fenced off");
            }
            let _ = decision.durable.send(durable);
        }
    }
}

/// Inserts the batch's commit decisions, each only if it lands before its deadline and no
/// record (a fence) is there; returns the txids inserted.
async fn write_batch(
    conn: &mut PgConnection,
    coordinator: &str,
    txids: &[Uuid],
    participants: &[String],
    deadlines: &[i64],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "insert into decisions (txid, coordinator, participants) \
         select t, $2, p from unnest($1::uuid[], $3::text[], $4::bigint[]) as d(t, p, by) \
         where clock_timestamp() < to_timestamp(by::double precision / 1000) \
         on conflict (txid) do nothing \
         returning txid",
    )
    .bind(txids)
    .bind(coordinator)
    .bind(participants)
    .bind(deadlines)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Of `txids`, those whose logged outcome is commit.
async fn committed_of(
    conn: &mut PgConnection,
    txids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, String> {
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "select txid from decisions where txid = any($1) and outcome = 'commit'",
    )
    .bind(txids)
    .fetch_all(conn)
    .await
    .map_err(|error| error.to_string())?;
    Ok(rows.into_iter().collect())
}

/// Which of `coordinators` are alive: a process of theirs holds the identity lock (see
/// [`lock_identity`]) on this database. One without cannot be deciding anything: its decisions
/// go through the session that holds the lock, and a successor takes the lock before serving.
pub async fn live_identities(
    pool: &PgPool,
    coordinators: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<String> = coordinators.iter().map(|id| (*id).to_owned()).collect();
    let live: Vec<String> = sqlx::query_scalar(
        "select id from unnest($1::text[]) as id \
         where exists (select 1 from pg_locks \
                       where locktype = 'advisory' and objsubid = 2 and granted \
                         and database = (select oid from pg_database \
                                         where datname = current_database()) \
                         and classid = hashtext('wdm-coordinator')::oid \
                         and objid = hashtext(id)::oid)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(live.into_iter().collect())
}

/// See [`DecisionLog::fence`]. `by` names who fenced (a coordinator, or the CLI).
pub async fn fence(pool: &PgPool, txid: Uuid, by: &str) -> Result<Fate, sqlx::Error> {
    // A commit decision being written at this moment holds the key: the insert waits for it and
    // then does nothing. The read after it is a new statement, so it sees that decision.
    let fenced = sqlx::query(
        "insert into decisions (txid, coordinator, participants, outcome, finished_at) \
         values ($1, $2, '', 'abort', now()) on conflict (txid) do nothing",
    )
    .bind(txid)
    .bind(by)
    .execute(pool)
    .await?;
    if fenced.rows_affected() == 1 {
        metrics::counter!(telemetry::FENCES).increment(1);
        tracing::info!(%txid, "transaction fenced off (abort record)");
        return Ok(Fate::Abort);
    }
    let outcome: String = sqlx::query_scalar("select outcome from decisions where txid = $1")
        .bind(txid)
        .fetch_one(pool)
        .await?;
    Ok(Fate::from_column(&outcome))
}

async fn finish_decisions(pool: PgPool, mut finished: mpsc::UnboundedReceiver<Uuid>) {
    while let Some(first) = finished.recv().await {
        let mut txids = vec![first];
        while txids.len() < 4 * MAX_BATCH {
            match finished.try_recv() {
                Ok(next) => txids.push(next),
                Err(_) => break,
            }
        }
        if let Err(error) = mark_finished(&pool, &txids).await {
            // Recovery finishes these records on its next round.
            tracing::warn!(%error, records = txids.len(), "could not mark decisions finished");
        }
    }
}

pub async fn mark_finished(pool: &PgPool, txids: &[Uuid]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Losing this write in a crash only makes recovery look at finished work again.
    tx.execute("set local synchronous_commit = off").await?;
    sqlx::query(
        "update decisions set finished_at = now() where txid = any($1) and finished_at is null",
    )
    .bind(txids.to_vec())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn decision_from_row(row: &sqlx::postgres::PgRow) -> Result<Decision, sqlx::Error> {
    let participants: String = row.try_get("participants")?;
    let finished_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("finished_at")?;
    let outcome: String = row.try_get("outcome")?;
    Ok(Decision {
        fate: Fate::from_column(&outcome),
        txid: row.try_get("txid")?,
        coordinator: row.try_get("coordinator")?,
        participants: participants.split(',').map(str::to_owned).collect(),
        decided_at: row.try_get("decided_at")?,
        finished: finished_at.is_some(),
    })
}

pub async fn lookup(pool: &PgPool, txid: Uuid) -> Result<Option<Decision>, sqlx::Error> {
    sqlx::query(
        "select txid, coordinator, participants, decided_at, finished_at, outcome \
         from decisions where txid = $1",
    )
    .bind(txid)
    .fetch_optional(pool)
    .await?
    .map(|row| decision_from_row(&row))
    .transpose()
}

pub async fn unfinished(
    pool: &PgPool,
    coordinator: &str,
) -> Result<HashMap<Uuid, Decision>, sqlx::Error> {
    let rows = sqlx::query(
        "select txid, coordinator, participants, decided_at, finished_at, outcome \
         from decisions where coordinator = $1 and finished_at is null",
    )
    .bind(coordinator)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| decision_from_row(row).map(|d| (d.txid, d)))
        .collect()
}

pub async fn record_hazard(pool: &PgPool, gid: &twopc::Gid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into hazards (gid, txid, participant) values ($1, $2, $3) \
         on conflict (gid) do nothing",
    )
    .bind(gid.to_string())
    .bind(gid.txid())
    .bind(gid.participant())
    .execute(pool)
    .await?;
    Ok(())
}

/// Unfinished decisions of every coordinator (the CLI's view).
pub async fn unfinished_all(pool: &PgPool) -> Result<HashMap<Uuid, Decision>, sqlx::Error> {
    let rows = sqlx::query(
        "select txid, coordinator, participants, decided_at, finished_at, outcome \
         from decisions where finished_at is null",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| decision_from_row(row).map(|d| (d.txid, d)))
        .collect()
}

/// Of `txids`, those with a record: its outcome, and whether the record is finished.
pub async fn recorded(
    pool: &PgPool,
    txids: &[Uuid],
) -> Result<HashMap<Uuid, (Fate, bool)>, sqlx::Error> {
    if txids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "select txid, outcome, finished_at is not null from decisions where txid = any($1)",
    )
    .bind(txids.to_vec())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(txid, outcome, finished)| (txid, (Fate::from_column(&outcome), finished)))
        .collect())
}

/// Records what an operator did by hand (recovery CLI).
pub async fn record_operator_action(
    pool: &PgPool,
    gid: &str,
    action: &str,
    forced: bool,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into operator_actions (gid, action, forced, reason) values ($1, $2, $3, $4)",
    )
    .bind(gid)
    .bind(action)
    .bind(forced)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// A hazard an operator has not resolved yet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hazard {
    pub gid: String,
    pub txid: Uuid,
    pub participant: String,
    pub detected_at: chrono::DateTime<chrono::Utc>,
}

pub async fn open_hazards(pool: &PgPool) -> Result<Vec<Hazard>, sqlx::Error> {
    let rows: Vec<(String, Uuid, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "select gid, txid, participant, detected_at from hazards \
         where resolved_at is null order by detected_at, gid",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(gid, txid, participant, detected_at)| Hazard {
            gid,
            txid,
            participant,
            detected_at,
        })
        .collect())
}

/// Deletes finished decision records older than `retention`; returns how many.
pub async fn gc_finished(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("delete from decisions where finished_at < now() - make_interval(secs => $1)")
            .bind(retention.as_secs_f64())
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}
