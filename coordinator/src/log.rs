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
//!   abort" are therefore final.

use std::{collections::HashMap, time::Duration};

use sqlx::{
    postgres::PgConnectOptions, ConnectOptions, Connection, Executor, PgConnection, PgPool, Row,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::telemetry;

/// Longest wait for one forced decision write before the connection is replaced.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most decisions forced in one write.
const MAX_BATCH: usize = 512;

/// A commit decision as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub txid: Uuid,
    pub coordinator: String,
    pub participants: Vec<String>,
    pub decided_at: chrono::DateTime<chrono::Utc>,
    pub finished: bool,
}

struct PendingDecision {
    txid: Uuid,
    participants: String,
    durable: oneshot::Sender<()>,
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

    /// Forces a commit decision to disk. Returns only once it is durable: retries through
    /// connection failures for as long as it takes, because until it returns nobody has been
    /// told anything and the branches stay prepared.
    pub async fn record_commit(&self, txid: Uuid, participants: &[String]) {
        let (durable, written) = oneshot::channel();
        let pending = PendingDecision {
            txid,
            participants: participants.join(","),
            durable,
        };
        if self.writer.send(pending).await.is_err() {
            // The writer task ended: the process is shutting down. Never return as if durable.
            std::future::pending::<()>().await;
        }
        if written.await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Marks a decision finished (every branch committed). Lazy and batched: losing it only
    /// costs recovery a look.
    pub fn finish(&self, txid: Uuid) {
        let _ = self.finisher.send(txid);
    }

    /// Marks decisions finished right away (recovery).
    pub async fn finish_now(&self, txids: &[Uuid]) -> Result<(), sqlx::Error> {
        mark_finished(&self.pool, txids).await
    }

    pub async fn lookup(&self, txid: Uuid) -> Result<Option<Decision>, sqlx::Error> {
        lookup(&self.pool, txid).await
    }

    /// Decisions of this coordinator whose branches are not all known to be committed.
    pub async fn unfinished(&self) -> Result<HashMap<Uuid, Decision>, sqlx::Error> {
        unfinished(&self.pool, &self.coordinator).await
    }

    pub async fn record_hazard(&self, gid: &twopc::Gid) -> Result<(), sqlx::Error> {
        record_hazard(&self.pool, gid).await
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn coordinator(&self) -> &str {
        &self.coordinator
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
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            // `on conflict do nothing` makes a retry after an unknown outcome safe.
            let insert = sqlx::query(
                "insert into decisions (txid, coordinator, participants) \
                 select t, $2, p from unnest($1::uuid[], $3::text[]) as d(t, p) \
                 on conflict (txid) do nothing",
            )
            .bind(txids.clone())
            .bind(coordinator.clone())
            .bind(participants.clone())
            .execute(&mut conn);
            // A write that hangs (a dead peer behind a proxy) is treated like a failed one: the
            // connection is replaced, and the retry cannot log a decision twice.
            let written = match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
                Ok(result) => result.map(|_| ()).map_err(|error| error.to_string()),
                Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
            };
            match written {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, decisions = txids.len(), "decision write failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    match lock_identity(&options, &coordinator).await {
                        Ok(fresh) => conn = fresh,
                        Err(error) => tracing::warn!(%error, "decision log unreachable"),
                    }
                }
            }
        }
        metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "decision", "participant" => "log")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::DECISION_BATCH).record(batch.len() as f64);
        for decision in batch {
            let _ = decision.durable.send(());
        }
    }
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
    Ok(Decision {
        txid: row.try_get("txid")?,
        coordinator: row.try_get("coordinator")?,
        participants: participants.split(',').map(str::to_owned).collect(),
        decided_at: row.try_get("decided_at")?,
        finished: finished_at.is_some(),
    })
}

pub async fn lookup(pool: &PgPool, txid: Uuid) -> Result<Option<Decision>, sqlx::Error> {
    sqlx::query("select txid, coordinator, participants, decided_at, finished_at from decisions where txid = $1")
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
        "select txid, coordinator, participants, decided_at, finished_at from decisions \
         where coordinator = $1 and finished_at is null",
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
        "select txid, coordinator, participants, decided_at, finished_at from decisions where finished_at is null",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| decision_from_row(row).map(|d| (d.txid, d)))
        .collect()
}

/// Of `txids`, those with a decision record, and whether that record is finished.
pub async fn recorded(pool: &PgPool, txids: &[Uuid]) -> Result<HashMap<Uuid, bool>, sqlx::Error> {
    if txids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as("select txid, finished_at is not null from decisions where txid = any($1)")
            .bind(txids.to_vec())
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
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
