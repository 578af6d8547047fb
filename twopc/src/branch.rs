//! The participant side of phase one.
//!
//! ```ignore
//! let Some(mut branch) = Branch::begin(&pool, &gid, lock_timeout).await? else {
//!     return Ok(Vote::Yes); // a retry of a branch that is already prepared
//! };
//! match db::reserve(branch.tx(), &work).await? {
//!     Ok(()) => branch.prepare().await,
//!     Err(refusal) => branch.refuse(refusal).await,
//! }
//! ```
//!
//! [`Branch::prepare`] inserts the gid into `twopc_markers` in the same transaction and then
//! runs `PREPARE TRANSACTION`: the marker commits if and only if the branch commits, which is
//! what lets phase two tell a branch that committed earlier from one that was lost.

use std::time::Duration;

use sqlx::{Executor, PgPool, Postgres, Transaction};

use crate::{
    wire::{Refusal, Vote},
    Gid,
};

/// SQLSTATE of a lock wait that ran past `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";
/// SQLSTATE of `PREPARE TRANSACTION` with a gid that is already prepared.
const DUPLICATE_OBJECT: &str = "42710";

/// The DDL of the marker table, for each participant's migrations.
pub const MARKER_TABLE: &str = "twopc_markers";

pub struct Branch {
    gid: Gid,
    tx: Transaction<'static, Postgres>,
}

impl Branch {
    /// Opens the branch's local transaction, with row-lock waits bounded by `lock_timeout`.
    ///
    /// Returns `None` when the gid is already prepared in this database: the coordinator (or a
    /// proxy) retried a prepare whose first answer was lost, and the vote is still yes.
    pub async fn begin(
        pool: &PgPool,
        gid: &Gid,
        lock_timeout: Duration,
    ) -> Result<Option<Self>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        let millis = format!("{}ms", lock_timeout.as_millis().max(1));
        // One round trip for both: the lock bound, and whether this is a repeated prepare.
        let prepared: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_prepared_xacts \
                            where database = current_database() and gid = $2) \
             from (select set_config('lock_timeout', $1, true)) as bound",
        )
        .bind(&millis)
        .bind(gid.to_string())
        .fetch_one(&mut *tx)
        .await?;
        if prepared {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(Self {
            gid: gid.clone(),
            tx,
        }))
    }

    /// The branch's transaction, for the participant's business statements.
    pub fn tx(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Votes yes: writes the marker and prepares the transaction durably.
    pub async fn prepare(mut self) -> Result<Vote, sqlx::Error> {
        let gid = self.gid.sql_literal();
        let sql =
            format!("insert into {MARKER_TABLE} (gid) values ({gid}); prepare transaction {gid}");
        match self.tx.execute(sql.as_str()).await {
            Ok(_) => {}
            Err(error) if crate::finish::has_code(&error, DUPLICATE_OBJECT) => {
                // A concurrent retry of the same branch prepared first; its vote stands.
                self.tx.rollback().await?;
                return Ok(Vote::Yes);
            }
            Err(error) => return Err(error),
        }
        // PREPARE TRANSACTION has ended the transaction block; this COMMIT only closes sqlx's
        // transaction object (PostgreSQL answers it with a harmless notice).
        self.tx.commit().await?;
        tracing::debug!(gid = %self.gid, "prepared");
        Ok(Vote::Yes)
    }

    /// Votes no: rolls the local work back.
    pub async fn refuse(self, refusal: Refusal) -> Result<Vote, sqlx::Error> {
        self.tx.rollback().await?;
        tracing::debug!(gid = %self.gid, code = %refusal.code, "refused");
        Ok(Vote::No(refusal))
    }
}

/// A lock wait or statement that ran out of time becomes a transient no vote, so the
/// coordinator aborts cleanly instead of reporting an error.
pub fn timeout_refusal(error: &sqlx::Error) -> Option<Refusal> {
    (crate::finish::has_code(error, LOCK_NOT_AVAILABLE)
        || crate::finish::has_code(error, QUERY_CANCELED))
    .then(|| Refusal::transient("busy", "rows are locked by another checkout, try again"))
}
