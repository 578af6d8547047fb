//! The decision log's two tasks: the group-commit writer, on the connection that holds the
//! coordinator's identity lock, and the lazy finisher.

use std::time::Duration;

use sqlx::{postgres::PgConnectOptions, Connection, Executor, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use twopc::Deadline;
use uuid::Uuid;

use super::mark_finished;
use crate::telemetry;

/// Longest wait for one forced decision write before the connection is replaced.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Most decisions forced in one write.
pub(super) const MAX_BATCH: usize = 512;

pub(super) struct PendingDecision {
    pub(super) txid: Uuid,
    pub(super) participants: String,
    pub(super) deadline: Deadline,
    /// True once the commit decision is durable; false when it was refused (its deadline had
    /// passed where it landed, or the transaction was fenced off first).
    pub(super) durable: oneshot::Sender<bool>,
}

pub(super) async fn lock_identity(
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

pub(super) async fn write_decisions(
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

/// How long the finisher gathers finished decisions before marking them in one statement. A
/// lone checkout's mark costs the log database more than its decision did (a transaction of
/// its own); gathered, dozens share one. Nothing waits for the mark.
const FINISH_GATHER: Duration = Duration::from_millis(100);

pub(super) async fn finish_decisions(pool: PgPool, mut finished: mpsc::UnboundedReceiver<Uuid>) {
    while let Some(first) = finished.recv().await {
        tokio::time::sleep(FINISH_GATHER).await;
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
