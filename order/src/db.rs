//! Every SQL statement of the order service.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Row};
use twopc::Deadline;
use uuid::Uuid;

/// An order as the public API shows it, plus the version checkout pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub paid: bool,
    /// One `(item_id, quantity)` per addItem call, in call order.
    pub items: Vec<(String, i64)>,
    pub total_cost: i64,
    pub version: i64,
}

fn order_from_row(row: &sqlx::postgres::PgRow) -> Result<Order, sqlx::Error> {
    let items: sqlx::types::Json<Vec<(String, i64)>> = row.try_get("items")?;
    Ok(Order {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        paid: row.try_get("paid")?,
        items: items.0,
        total_cost: row.try_get("total_cost")?,
        version: row.try_get("version")?,
    })
}

pub async fn create_order(
    db: impl PgExecutor<'_>,
    id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into orders (id, user_id) values ($1, $2)")
        .bind(id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Orders "0".."n-1", each of a random user with two random items (possibly the same) of
/// quantity 1. Existing orders with those ids are replaced. One statement: 100,000 rows take a
/// fraction of a second.
pub async fn batch_init(
    db: impl PgExecutor<'_>,
    n: i64,
    n_items: i64,
    n_users: i64,
    total_cost: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "insert into orders (id, user_id, paid, items, total_cost, version) \
         select g::text, \
                floor(random() * $3)::bigint::text, \
                false, \
                jsonb_build_array( \
                    jsonb_build_array(floor(random() * $2)::bigint::text, 1), \
                    jsonb_build_array(floor(random() * $2)::bigint::text, 1)), \
                $4, 0 \
         from generate_series(0, $1 - 1) as g \
         on conflict (id) do update set \
            user_id = excluded.user_id, paid = false, items = excluded.items, \
            total_cost = excluded.total_cost, version = orders.version + 1",
    )
    .bind(n)
    .bind(n_items)
    .bind(n_users)
    .bind(total_cost)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

pub async fn find_order(db: impl PgExecutor<'_>, id: &str) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query("select id, user_id, paid, items, total_cost, version from orders where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?
        .map(|row| order_from_row(&row))
        .transpose()
}

/// Why an order could not be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    Unknown,
    Paid,
    /// The order exists and is unpaid but its version moved on.
    Changed,
    /// The order is claimed by another transaction (this one was given up on).
    Superseded,
}

/// Appends an item and adds its cost, unless the order is paid. Returns the new total.
pub async fn add_item(
    db: &mut PgConnection,
    id: &str,
    item_id: &str,
    quantity: i64,
    cost: i64,
) -> Result<Result<i64, Unchanged>, sqlx::Error> {
    let total: Option<i64> = sqlx::query_scalar(
        "update orders set \
            items = items || jsonb_build_array(jsonb_build_array($2::text, $3::bigint)), \
            total_cost = total_cost + $4, \
            version = version + 1 \
         where id = $1 and not paid \
         returning total_cost",
    )
    .bind(id)
    .bind(item_id)
    .bind(quantity)
    .bind(cost)
    .fetch_optional(&mut *db)
    .await?;
    match total {
        Some(total) => Ok(Ok(total)),
        None => Ok(Err(why_unchanged(db, id).await?)),
    }
}

/// Who holds an order's checkout, as [`claim`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The order is now claimed by the caller's transaction; its current state.
    Mine(Order),
    /// Another transaction holds the claim; it must be followed to its outcome first.
    Theirs {
        txid: Uuid,
        deadline: Deadline,
    },
    Paid,
    Unknown,
}

/// Claims an unpaid order for transaction `txid` with `deadline`, if its claim is still
/// `expected` (`None`: unclaimed; `Some(t)`: taking over from `t`, which is known to have
/// aborted, or re-claiming our own `txid` after a lost reply). One statement when it succeeds.
///
/// Runs on the asynchronous-commit pool: a claim lost in a crash was never followed by the
/// order branch's PREPARE, which flushes the WAL (and waits for the synchronous standby) up to
/// a point after the claim, so a transaction that can commit always has its claim on disk.
pub async fn claim(
    db: &mut PgConnection,
    id: &str,
    mut expected: Option<Uuid>,
    txid: Uuid,
    deadline: Deadline,
) -> Result<Claim, sqlx::Error> {
    // Each miss means the claim changed hands between the two statements; a few are enough.
    for _ in 0..4 {
        let row = sqlx::query(
            "update orders set checkout_txid = $2, checkout_deadline = $3 \
             where id = $1 and not paid and checkout_txid is not distinct from $4 \
             returning id, user_id, paid, items, total_cost, version",
        )
        .bind(id)
        .bind(txid)
        .bind(deadline.as_millis() as i64)
        .bind(expected)
        .fetch_optional(&mut *db)
        .await?;
        if let Some(row) = row {
            return Ok(Claim::Mine(order_from_row(&row)?));
        }
        let row =
            sqlx::query("select paid, checkout_txid, checkout_deadline from orders where id = $1")
                .bind(id)
                .fetch_optional(&mut *db)
                .await?;
        let Some(row) = row else {
            return Ok(Claim::Unknown);
        };
        if row.try_get::<bool, _>("paid")? {
            return Ok(Claim::Paid);
        }
        let holder: Option<Uuid> = row.try_get("checkout_txid")?;
        let held_until: Option<i64> = row.try_get("checkout_deadline")?;
        match holder {
            // Our own claim, whose first reply was lost: take it again to read the order.
            Some(holder) if holder == txid => expected = Some(txid),
            Some(holder) => {
                return Ok(Claim::Theirs {
                    txid: holder,
                    deadline: Deadline::from_millis(held_until.unwrap_or(0).max(0) as u64),
                })
            }
            // Released meanwhile.
            None => expected = None,
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "the checkout claim of order {id:?} kept changing hands"
    )))
}

/// Clears the claim of `txid` once it is known to have aborted (asynchronous commit, like
/// [`claim`]: a lost release only makes the next checkout learn the outcome again).
pub async fn release(db: impl PgExecutor<'_>, id: &str, txid: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update orders set checkout_txid = null, checkout_deadline = null \
         where id = $1 and checkout_txid = $2",
    )
    .bind(id)
    .bind(txid)
    .execute(db)
    .await?;
    Ok(())
}

async fn why_unchanged(db: &mut PgConnection, id: &str) -> Result<Unchanged, sqlx::Error> {
    let paid: Option<bool> = sqlx::query_scalar("select paid from orders where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    Ok(match paid {
        None => Unchanged::Unknown,
        Some(_) => Unchanged::Paid,
    })
}
