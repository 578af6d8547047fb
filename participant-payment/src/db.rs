//! Every SQL statement of the payment service.
//!
//! `participant-stock/src/db.rs` has the same shape (create, batch init, find, add, guarded
//! subtract) over a different table, columns and errors; it is kept per crate on purpose, as
//! a generic version would only hide the SQL. What an addition can come to is shared
//! ([`service_kit::db::add`]).

use serde::Serialize;
use service_kit::db::Added;
use sqlx::{PgConnection, PgExecutor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub user_id: String,
    pub credit: i64,
}

pub async fn create_user(db: impl PgExecutor<'_>, id: &str) -> Result<()> {
    sqlx::query("insert into users (id, credit) values ($1, 0)")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Creates or overwrites users "0".."n-1" in one statement.
pub async fn batch_init(db: impl PgExecutor<'_>, n: i64, credit: i64) -> Result<()> {
    sqlx::query(
        "insert into users (id, credit) \
         select g::text, $2 from generate_series(0, $1 - 1) as g \
         on conflict (id) do update set credit = excluded.credit",
    )
    .bind(n)
    .bind(credit)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_user(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as("select id as user_id, credit from users where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn add_funds(db: impl PgExecutor<'_>, id: &str, amount: i64) -> Result<()> {
    let sql = "update users set credit = credit + $2 where id = $1";
    match service_kit::db::add(db, sql, id, amount).await? {
        Added::Done => Ok(()),
        Added::UnknownId => Err(Error::UnknownUser(id.to_owned())),
        Added::Overflow => Err(Error::Overflow {
            user_id: id.to_owned(),
            amount,
        }),
    }
}

/// Charges `amount` to user `id`, or says why not: the database's `payment_charge_batch`
/// (migration `0004_charge_for_a_batch.sql`) with one member, the rule a checkout's payment
/// branch charges by too ([`crate::prepare::charge_sql`]).
pub async fn charge(
    conn: &mut PgConnection,
    id: &str,
    amount: i64,
) -> sqlx::Result<std::result::Result<(), twopc::wire::Refusal>> {
    let charged = sqlx::query("select payment_charge_batch(array[$1], array[$2])")
        .bind(id)
        .bind(amount)
        .execute(conn)
        .await;
    twopc::branch::done_or_refused(charged)
}
