//! Phase two and recovery, run directly on a participant's database.
//!
//! `COMMIT PREPARED` is not idempotent: a second call fails with 42704, exactly like a call for
//! a branch that was never prepared or was lost in a failover. The marker that
//! [`crate::branch::Branch::prepare`] wrote tells the two apart.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Executor, PgPool, Row};

use crate::{branch::MARKER_TABLE, sqlstate::has_code, Gid};

/// SQLSTATE of `COMMIT/ROLLBACK PREPARED` for a gid that is not prepared.
const UNDEFINED_OBJECT: &str = "42704";
/// SQLSTATE of a prepared transaction that another session is finishing right now.
const OBJECT_IN_USE: &str = "55000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    /// This call committed the branch.
    Committed,
    /// The branch had been committed before (its marker is there).
    AlreadyCommitted,
    /// Not prepared and no marker: the branch was never prepared here, was rolled back, or was
    /// lost. A commit decision cannot be honoured; this is a hazard for an operator.
    Lost,
    /// Another session is finishing the branch at this moment; ask again.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackResult {
    /// This call rolled the branch back.
    RolledBack,
    /// Nothing prepared under that gid and no marker: nothing to undo.
    NotPrepared,
    /// Not prepared, but its marker is there: the branch committed earlier and cannot be
    /// rolled back.
    WasCommitted,
    /// Another session is finishing the branch at this moment; ask again.
    Busy,
}

/// One prepared transaction as PostgreSQL lists it.
#[derive(Debug, Clone)]
pub struct PreparedBranch {
    pub gid: Gid,
    pub prepared_at: DateTime<Utc>,
}

// Gids are formatted into the statement (PREPARE and friends take no parameters); a statement
// without arguments runs over the simple query protocol, so no per-gid prepared statement is
// cached on the connection.

pub async fn commit_prepared(pool: &PgPool, gid: &Gid) -> Result<CommitResult, sqlx::Error> {
    let sql = format!("commit prepared {}", gid.sql_literal());
    match pool.execute(sql.as_str()).await {
        Ok(_) => Ok(CommitResult::Committed),
        Err(error) if has_code(&error, UNDEFINED_OBJECT) => {
            if marker_exists(pool, gid).await? {
                Ok(CommitResult::AlreadyCommitted)
            } else {
                Ok(CommitResult::Lost)
            }
        }
        Err(error) if has_code(&error, OBJECT_IN_USE) => Ok(CommitResult::Busy),
        Err(error) => Err(error),
    }
}

pub async fn rollback_prepared(pool: &PgPool, gid: &Gid) -> Result<RollbackResult, sqlx::Error> {
    let sql = format!("rollback prepared {}", gid.sql_literal());
    match pool.execute(sql.as_str()).await {
        Ok(_) => Ok(RollbackResult::RolledBack),
        Err(error) if has_code(&error, UNDEFINED_OBJECT) => {
            if marker_exists(pool, gid).await? {
                Ok(RollbackResult::WasCommitted)
            } else {
                Ok(RollbackResult::NotPrepared)
            }
        }
        Err(error) if has_code(&error, OBJECT_IN_USE) => Ok(RollbackResult::Busy),
        Err(error) => Err(error),
    }
}

/// Prepared branches in this database whose gid starts with `prefix`, oldest first. Gids of
/// this system that do not parse (written by hand, say) are logged and left alone.
pub async fn list_prepared(
    pool: &PgPool,
    prefix: &str,
) -> Result<Vec<PreparedBranch>, sqlx::Error> {
    let rows = sqlx::query(
        "select gid, prepared from pg_prepared_xacts \
         where database = current_database() and starts_with(gid, $1) \
         order by prepared",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    let mut branches = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String = row.try_get("gid")?;
        match Gid::parse(&text) {
            Ok(gid) => branches.push(PreparedBranch {
                gid,
                prepared_at: row.try_get("prepared")?,
            }),
            Err(error) => tracing::warn!(%error, "prepared transaction with a foreign gid"),
        }
    }
    Ok(branches)
}

pub async fn marker_exists(pool: &PgPool, gid: &Gid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "select exists (select 1 from {MARKER_TABLE} where gid = $1)"
    ))
    .bind(gid.to_string())
    .fetch_one(pool)
    .await
}

/// Deletes markers older than `retention`. A marker is only read while its decision record is
/// unfinished, which recovery settles within seconds; the retention is hours.
pub async fn gc_markers(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let seconds = retention.as_secs_f64();
    let done = sqlx::query(&format!(
        "delete from {MARKER_TABLE} where created_at < now() - make_interval(secs => $1)"
    ))
    .bind(seconds)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
