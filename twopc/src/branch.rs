//! The participant side of phase one.
//!
//! A branch's business work is SQL text: one call of the participant's SQL function, which does
//! the check and the update and refuses by raising [`REFUSE`] or [`REFUSE_TRANSIENT`]. So a
//! whole branch travels as one simple query, one round trip: [`Branch::run_in_one_trip`] sends
//! the opening, the work, the marker and `PREPARE TRANSACTION` together. A repeated prepare
//! (the coordinator lost the answer) first looks whether the branch is prepared already:
//!
//! ```ignore
//! let Some(branch) = Branch::begin(&pool, &gid, req.deadline, req.repeat).await? else {
//!     return Ok(Vote::Yes); // a retry of a branch that is already prepared
//! };
//! branch.run(&work_sql).await
//! ```
//!
//! The marker is the gid inserted into `twopc_markers` in the same transaction, before
//! `PREPARE TRANSACTION`: it commits if and only if the branch commits, which is what lets
//! phase two tell a branch that committed earlier from one that was lost.
//!
//! The whole branch is bounded by the coordinator's deadline: the wait for a pooled
//! connection, every lock wait and statement (`lock_timeout`, `statement_timeout`), a session
//! left idle in the transaction by a stopped process (`idle_in_transaction_session_timeout`,
//! which ends the session and frees its locks), and finally the marker row, whose check
//! refuses the insert, and so the `PREPARE TRANSACTION` after it, once the deadline has passed.
//! A branch the coordinator has given up on therefore cannot be prepared later.

use sqlx::{pool::PoolConnection, Executor, PgConnection, PgPool, Postgres, Row};

use crate::{
    sqlstate::has_code,
    wire::{Refusal, Vote},
    Deadline, Gid,
};

/// SQLSTATE of a lock wait that ran past `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE of a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";
/// SQLSTATE of a session ended by `idle_in_transaction_session_timeout`.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
/// SQLSTATE of `PREPARE TRANSACTION` with a gid that is already prepared.
const DUPLICATE_OBJECT: &str = "42710";
/// SQLSTATE `out_of_memory`, which `PREPARE TRANSACTION` raises when every slot of the
/// server's `max_prepared_transactions` is taken.
const OUT_OF_MEMORY: &str = "53200";
/// SQLSTATE of a failed check constraint: the marker's deadline check.
const CHECK_VIOLATION: &str = "23514";
/// The marker table's deadline check (migrations `0002_marker_deadline.sql`).
const IN_TIME_CHECK: &str = "twopc_markers_prepared_in_time";

/// The DDL of the marker table, for each participant's migrations.
pub const MARKER_TABLE: &str = "twopc_markers";

/// A branch's local transaction, on a pooled connection of its own.
///
/// The transaction block is opened and closed with plain statements rather than sqlx's
/// `Transaction`, because `PREPARE TRANSACTION` ends the block itself: sqlx would follow it
/// with a `COMMIT` (or, dropped, a `ROLLBACK`) that costs a round trip and draws a warning
/// in the server log for every branch. The connection goes back to the pool only once the
/// block is closed (prepared or rolled back); a branch dropped or failed in between closes
/// its connection, which ends the block on the server.
pub struct Branch {
    gid: Gid,
    deadline: Deadline,
    /// `Some` while the transaction block is open.
    conn: Option<PoolConnection<Postgres>>,
}

impl Drop for Branch {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            // Still inside the block: never hand it to another branch.
            conn.close_on_drop();
        }
    }
}

impl Branch {
    /// Opens the branch's local transaction, every wait in it bounded by `deadline`, in one
    /// round trip. A deadline that passes while waiting for a connection is
    /// [`sqlx::Error::PoolTimedOut`], which [`transient_refusal`] turns into a no vote like any
    /// other timeout.
    ///
    /// `repeat` says the coordinator has sent this prepare before and lost the answer
    /// ([`crate::wire::PrepareRequest::repeat`]): then the branch may be prepared already, and
    /// `None` says so (the vote is still yes). A first send skips that look, which costs the
    /// server a scan of every prepared transaction. Should such a gid be prepared all the same,
    /// nothing breaks: the work waits for the rows its twin holds until the deadline, and the
    /// vote is a transient no.
    pub async fn begin(
        pool: &PgPool,
        gid: &Gid,
        deadline: Deadline,
        repeat: bool,
    ) -> Result<Option<Self>, sqlx::Error> {
        let mut branch = Self::acquire(pool, gid, deadline).await?;
        let mut sql = opening(deadline)?;
        if !repeat {
            branch.tx().execute(sql.as_str()).await?;
            return Ok(Some(branch));
        }
        sql.push_str(&format!(
            "; select exists (select 1 from pg_prepared_xacts \
                              where database = current_database() and gid = {gid}) as prepared",
            gid = gid.sql_literal(),
        ));
        let rows = branch.tx().fetch_all(sql.as_str()).await?;
        let prepared: bool = rows
            .last()
            .ok_or_else(|| sqlx::Error::Protocol("no row from the branch's opening".into()))?
            .try_get("prepared")?;
        if prepared {
            branch.close("rollback").await?;
            return Ok(None);
        }
        Ok(Some(branch))
    }

    /// Takes a pooled connection for the branch, waiting no longer than `deadline`.
    async fn acquire(pool: &PgPool, gid: &Gid, deadline: Deadline) -> Result<Self, sqlx::Error> {
        let left = deadline.remaining().ok_or(sqlx::Error::PoolTimedOut)?;
        let conn = tokio::time::timeout(left, pool.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(Self {
            gid: gid.clone(),
            deadline,
            conn: Some(conn),
        })
    }

    /// The whole branch in one round trip: the block and its bounds as [`Branch::begin`] opens
    /// them, the business `work`, the marker and `PREPARE TRANSACTION` as [`Branch::run`]
    /// sends them, as one simple query.
    ///
    /// Not for a repeated prepare ([`Branch::begin`] with `repeat`): that must look whether
    /// the branch is prepared already before doing the work again.
    pub async fn run_in_one_trip(
        pool: &PgPool,
        gid: &Gid,
        deadline: Deadline,
        work: &str,
    ) -> Result<Vote, sqlx::Error> {
        let branch = Self::acquire(pool, gid, deadline).await?;
        let opening = opening(deadline)?;
        branch.send(Some(&format!("{opening}; {work}"))).await
    }

    /// Does the business `work` in the open block and votes: the work, the marker and
    /// `PREPARE TRANSACTION` as one simple query, unless the work refuses or the deadline has
    /// passed by the time the marker lands (then the error is a timeout, see
    /// [`transient_refusal`]). `work` is SQL text, its values formatted with [`crate::sql`]; it
    /// refuses by raising [`REFUSE`] or [`REFUSE_TRANSIENT`] (see [`raised_refusal`]), which
    /// skips the rest of the query, and the branch is then rolled back: a no.
    pub async fn run(self, work: &str) -> Result<Vote, sqlx::Error> {
        self.send(Some(work)).await
    }

    /// Votes yes on the work done so far in the block (statement by statement, through
    /// [`Branch::tx`]): the marker and `PREPARE TRANSACTION` in one round trip, unless the
    /// deadline has passed by the time the marker lands.
    pub async fn prepare(self) -> Result<Vote, sqlx::Error> {
        self.send(None).await
    }

    /// Sends `sql`, then the marker and `PREPARE TRANSACTION`, and votes on the outcome.
    async fn send(mut self, sql: Option<&str>) -> Result<Vote, sqlx::Error> {
        let sql = match sql {
            Some(sql) => format!("{sql}; {}", self.prepare_sql()),
            None => self.prepare_sql(),
        };
        match self.tx().execute(sql.as_str()).await {
            Err(error) => match raised_refusal(&error) {
                Some(refusal) => self.refuse(refusal).await,
                None => self.prepared_or(error).await,
            },
            // PREPARE TRANSACTION has ended the block: the connection is free again.
            Ok(_) => {
                self.conn = None;
                tracing::debug!(gid = %self.gid, "prepared");
                Ok(Vote::Yes)
            }
        }
    }

    /// The marker, then `PREPARE TRANSACTION`.
    fn prepare_sql(&self) -> String {
        let gid = self.gid.sql_literal();
        let by = self.deadline.sql_timestamp();
        format!(
            "insert into {MARKER_TABLE} (gid, prepare_by) values ({gid}, {by}); \
             prepare transaction {gid}"
        )
    }

    /// After a failed prepare: a yes when a concurrent retry of the same branch prepared
    /// first, else the branch is rolled back and `error` returned.
    async fn prepared_or(mut self, error: sqlx::Error) -> Result<Vote, sqlx::Error> {
        if has_code(&error, DUPLICATE_OBJECT) {
            // Its vote stands.
            self.close("rollback").await?;
            return Ok(Vote::Yes);
        }
        Err(self.fail(error).await)
    }

    /// The branch's transaction, for the participant's business statements.
    pub fn tx(&mut self) -> &mut PgConnection {
        self.conn
            .as_deref_mut()
            .expect("a branch's connection is there until the branch is consumed")
    }

    /// Ends the transaction block with `statement` and gives the connection back to the pool.
    async fn close(&mut self, statement: &str) -> Result<(), sqlx::Error> {
        self.tx().execute(statement).await?;
        self.conn = None;
        Ok(())
    }

    /// Votes no: rolls the local work back.
    async fn refuse(mut self, refusal: Refusal) -> Result<Vote, sqlx::Error> {
        self.close("rollback").await?;
        tracing::debug!(gid = %self.gid, code = %refusal.code, "refused");
        Ok(Vote::No(refusal))
    }

    /// The branch's work failed with `error`: rolls it back, keeping the connection for the
    /// pool when the server answers (a lock wait that ran out is common under a hot row),
    /// and returns the error.
    async fn fail(mut self, error: sqlx::Error) -> sqlx::Error {
        if let Err(rollback) = self.close("rollback").await {
            tracing::debug!(gid = %self.gid, %rollback, "rollback after a failure failed; connection closed");
        }
        error
    }
}

/// SQLSTATE a branch's work raises to refuse for a business reason (see [`Branch::run`]): the
/// message is the refusal's, the detail its code, and in a batch the hint the refused member's
/// position (see [`Refusal::member`]). A class of its own, which PostgreSQL does not use.
pub const REFUSE: &str = "WR000";
/// SQLSTATE a branch's work raises to refuse for a transient reason (the checkout may run
/// again), as [`REFUSE`] otherwise.
pub const REFUSE_TRANSIENT: &str = "WR001";

/// The refusal a branch's work raised with [`REFUSE`] or [`REFUSE_TRANSIENT`], if it did,
/// naming the member its hint names.
pub fn raised_refusal(error: &sqlx::Error) -> Option<Refusal> {
    let business = has_code(error, REFUSE);
    if !business && !has_code(error, REFUSE_TRANSIENT) {
        return None;
    }
    let db = error.as_database_error()?;
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
    let code = pg
        .and_then(|pg| pg.detail())
        .unwrap_or("refused")
        .to_owned();
    let refusal = if business {
        Refusal::business(&code, db.message())
    } else {
        Refusal::transient(&code, db.message())
    };
    let member = pg
        .and_then(|pg| pg.hint())
        .and_then(|hint| hint.parse().ok());
    Some(match member {
        Some(index) => refusal.of_member(index),
        None => refusal,
    })
}

/// What a statement of a branch's work did, run on its own (not in one trip): done, refused
/// (it raised [`REFUSE`] or [`REFUSE_TRANSIENT`]), or failed.
pub fn done_or_refused<T>(
    done: Result<T, sqlx::Error>,
) -> Result<Result<(), Refusal>, sqlx::Error> {
    match done {
        Ok(_) => Ok(Ok(())),
        Err(error) => match raised_refusal(&error) {
            Some(refusal) => Ok(Err(refusal)),
            None => Err(error),
        },
    }
}

/// Opens the branch's transaction block with every wait in it bounded by `deadline`: a
/// session left idle in the transaction (its process stopped) is ended by the server a moment
/// after the deadline, freeing its row locks; a live process past the deadline is refused by
/// the marker's check with a clean no vote first. Every value in the text is a number.
fn opening(deadline: Deadline) -> Result<String, sqlx::Error> {
    let left = deadline.remaining().ok_or(sqlx::Error::PoolTimedOut)?;
    let millis = left.as_millis().max(1);
    let idle = (left + crate::deadline::SETTLE).as_millis();
    Ok(format!(
        "begin; \
         set local lock_timeout = '{millis}ms'; \
         set local statement_timeout = '{millis}ms'; \
         set local idle_in_transaction_session_timeout = '{idle}ms'"
    ))
}

/// A wait that ran out of time becomes a transient no vote, so the coordinator aborts
/// cleanly instead of reporting an error: a lock wait or statement past its bound, no pooled
/// connection before the deadline, or the deadline passed when the marker landed. So does a
/// server with no room for another prepared transaction (admission control keeps the
/// checkouts in flight below `max_prepared_transactions`; a misconfigured deployment must
/// still answer "nothing changed, try again", not an error).
pub fn transient_refusal(error: &sqlx::Error) -> Option<Refusal> {
    if has_code(error, OUT_OF_MEMORY) {
        return Some(Refusal::transient(
            "busy",
            "the database has no room for another prepared transaction, try again",
        ));
    }
    let late = matches!(error, sqlx::Error::PoolTimedOut)
        || has_code(error, LOCK_NOT_AVAILABLE)
        || has_code(error, QUERY_CANCELED)
        || has_code(error, IDLE_IN_TRANSACTION_TIMEOUT)
        || (has_code(error, CHECK_VIOLATION)
            && error
                .as_database_error()
                .and_then(|db| db.constraint())
                .is_some_and(|name| name == IN_TIME_CHECK));
    late.then(|| Refusal::transient("busy", "the checkout ran out of time, try again"))
}
