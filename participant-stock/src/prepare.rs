//! The stock branch of a checkout: what it asks for and how it is taken.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use service_kit::parse_id;
use sqlx::PgConnection;
use twopc::wire::Refusal;

use crate::{
    db,
    error::{Error, Result},
};

/// The stock branch's work: take `quantity` of each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockWork {
    pub items: Vec<Line>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub item_id: String,
    pub quantity: i64,
}

impl StockWork {
    /// Reads and checks the work: ids valid and distinct (the order service sums quantities of
    /// one item), quantities at least 1.
    pub fn from_json(work: serde_json::Value) -> Result<Self> {
        let work: Self =
            serde_json::from_value(work).map_err(|error| Error::Work(error.to_string()))?;
        let mut seen = HashSet::with_capacity(work.items.len());
        for line in &work.items {
            parse_id("item_id", &line.item_id)?;
            if line.quantity < 1 {
                return Err(Error::Work(format!(
                    "quantity of item {} must be at least 1, got {}",
                    line.item_id, line.quantity
                )));
            }
            if !seen.insert(line.item_id.as_str()) {
                return Err(Error::Work(format!("item {} appears twice", line.item_id)));
            }
        }
        Ok(work)
    }

    /// The work's ids and quantities, line by line.
    fn columns(&self) -> (Vec<&str>, Vec<i64>) {
        self.items
            .iter()
            .map(|line| (line.item_id.as_str(), line.quantity))
            .unzip()
    }
}

/// Takes the work's quantities, or says why not: the database's `stock_take` (migration
/// `0003_take_in_one_statement.sql`), whose first look without locks refuses at once what
/// cannot succeed before it locks the rows in id order.
pub async fn reserve(
    conn: &mut PgConnection,
    work: &StockWork,
) -> sqlx::Result<std::result::Result<(), Refusal>> {
    let (ids, quantities) = work.columns();
    let taken = sqlx::query("select stock_take($1, $2)")
        .bind(ids)
        .bind(quantities)
        .execute(conn)
        .await;
    twopc::branch::done_or_refused(taken)
}

/// [`reserve`] as SQL text, for a branch sent in one round trip.
pub fn take_sql(work: &StockWork) -> Option<String> {
    let (ids, quantities) = work.columns();
    Some(format!(
        "select stock_take({}, {})",
        twopc::sql::text_array(&ids)?,
        twopc::sql::bigint_array(&quantities)
    ))
}

/// Takes the quantities of a batch's members as [`reserve`] would one after another, all or
/// none, or names the first member that cannot have its own: a look without locks first (as
/// for one member), then every item locked in id order and read, and one update of the totals.
pub async fn reserve_batch(
    conn: &mut PgConnection,
    works: &[StockWork],
) -> sqlx::Result<std::result::Result<(), (usize, Refusal)>> {
    let mut totals: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for line in works.iter().flat_map(|work| &work.items) {
        let total = totals.entry(line.item_id.as_str()).or_insert(0);
        // Only used once every member fits, when the sum is below the stock.
        *total = total.saturating_add(line.quantity);
    }
    let ids: Vec<String> = totals.keys().map(|id| (*id).to_owned()).collect();
    let committed: HashMap<String, i64> = db::read_items(&mut *conn, &ids)
        .await?
        .into_iter()
        .collect();
    if let Some(refused) = first_short(works, committed) {
        return Ok(Err(refused));
    }
    let locked: HashMap<String, i64> = db::lock_items(&mut *conn, &ids)
        .await?
        .into_iter()
        .collect();
    if let Some(refused) = first_short(works, locked) {
        return Ok(Err(refused));
    }
    let quantities: Vec<i64> = totals.values().copied().collect();
    db::subtract_locked(conn, &ids, &quantities).await?;
    Ok(Ok(()))
}

/// The first member that `stock`, less what the members before it take, cannot cover.
fn first_short(works: &[StockWork], mut stock: HashMap<String, i64>) -> Option<(usize, Refusal)> {
    for (index, work) in works.iter().enumerate() {
        if let Some(refusal) = shortfall(work, &stock) {
            return Some((index, refusal));
        }
        for line in &work.items {
            if let Some(left) = stock.get_mut(&line.item_id) {
                *left -= line.quantity;
            }
        }
    }
    None
}

/// Why `stock` cannot cover the work, if it cannot.
fn shortfall(work: &StockWork, stock: &HashMap<String, i64>) -> Option<Refusal> {
    for line in &work.items {
        let Some(&left) = stock.get(&line.item_id) else {
            return Some(Refusal::business(
                "unknown_item",
                format!("item {} does not exist", line.item_id),
            ));
        };
        if left < line.quantity {
            return Some(Refusal::business(
                "out_of_stock",
                format!(
                    "item {} has {left} left, {} wanted",
                    line.item_id, line.quantity
                ),
            ));
        }
    }
    None
}
