//! The decision log's records, read and written outside the group-commit writer: fences,
//! finished marks, lookups, hazards, operators' actions and garbage collection.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use sqlx::{Executor, PgPool, Row};
use uuid::Uuid;

use super::{Decision, Fate};
use crate::telemetry;

/// Which of `coordinators` are alive: a process of theirs holds the identity lock (see
/// the writer's `lock_identity`) on this database. One without cannot be deciding anything: its decisions
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
