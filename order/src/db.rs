//! Every SQL statement of the order service.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Row};

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
        None => Ok(Err(why_unchanged(db, id, None).await?)),
    }
}

/// The order branch of a checkout: marks the order paid if it is unpaid and still at
/// `version`. Runs inside the branch's transaction, so the row stays locked until the
/// coordinator's decision.
pub async fn mark_paid(
    db: &mut PgConnection,
    id: &str,
    version: i64,
) -> Result<Result<(), Unchanged>, sqlx::Error> {
    let marked =
        sqlx::query("update orders set paid = true where id = $1 and not paid and version = $2")
            .bind(id)
            .bind(version)
            .execute(&mut *db)
            .await?;
    if marked.rows_affected() == 1 {
        return Ok(Ok(()));
    }
    Ok(Err(why_unchanged(db, id, Some(version)).await?))
}

async fn why_unchanged(
    db: &mut PgConnection,
    id: &str,
    version: Option<i64>,
) -> Result<Unchanged, sqlx::Error> {
    let row = sqlx::query("select paid, version from orders where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else {
        return Ok(Unchanged::Unknown);
    };
    let paid: bool = row.try_get("paid")?;
    let current: i64 = row.try_get("version")?;
    Ok(if paid {
        Unchanged::Paid
    } else if version.is_some_and(|v| v != current) {
        Unchanged::Changed
    } else {
        // Unpaid at the same version: the update raced with a rollback; report as changed so
        // the caller retries.
        Unchanged::Changed
    })
}
