//! Every SQL statement of the stock service.
//!
//! `participant-payment/src/db.rs` has the same shape (create, batch init, find, add, guarded
//! subtract) over a different table, columns and errors; it is kept per crate on purpose, as
//! a generic version would only hide the SQL. What an addition can come to is shared
//! ([`service_kit::db::add`]).

use serde::Serialize;
use service_kit::db::Added;
use sqlx::{PgConnection, PgExecutor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Item {
    pub stock: i64,
    pub price: i64,
}

pub async fn create_item(db: impl PgExecutor<'_>, id: &str, price: i64) -> Result<()> {
    sqlx::query("insert into items (id, stock, price) values ($1, 0, $2)")
        .bind(id)
        .bind(price)
        .execute(db)
        .await?;
    Ok(())
}

/// Creates or overwrites items "0".."n-1" in one statement.
pub async fn batch_init(db: impl PgExecutor<'_>, n: i64, stock: i64, price: i64) -> Result<()> {
    sqlx::query(
        "insert into items (id, stock, price) \
         select g::text, $2, $3 from generate_series(0, $1 - 1) as g \
         on conflict (id) do update set stock = excluded.stock, price = excluded.price",
    )
    .bind(n)
    .bind(stock)
    .bind(price)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_item(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<Item>> {
    sqlx::query_as("select stock, price from items where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn add_stock(db: impl PgExecutor<'_>, id: &str, amount: i64) -> Result<()> {
    let sql = "update items set stock = stock + $2 where id = $1";
    match service_kit::db::add(db, sql, id, amount).await? {
        Added::Done => Ok(()),
        Added::UnknownId => Err(Error::UnknownItem(id.to_owned())),
        Added::Overflow => Err(Error::Overflow {
            item_id: id.to_owned(),
            amount,
        }),
    }
}

/// Subtracts in one guarded statement; only when that changes nothing does a second read tell
/// an unknown item from a short one (items are never deleted, so the answer cannot race).
pub async fn subtract_stock(conn: &mut PgConnection, id: &str, amount: i64) -> Result<()> {
    let done = sqlx::query("update items set stock = stock - $2 where id = $1 and stock >= $2")
        .bind(id)
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    match find_item(conn, id).await? {
        None => Err(Error::UnknownItem(id.to_owned())),
        Some(item) => Err(Error::InsufficientStock {
            item_id: id.to_owned(),
            stock: item.stock,
            wanted: amount,
        }),
    }
}
