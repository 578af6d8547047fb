//! The stock branch of a checkout: what it asks for and how it is taken.

use std::collections::HashSet;

use serde::Deserialize;
use service_kit::parse_id;

use crate::error::{Error, Result};

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
}

/// The members' works as SQL text: the database's `stock_take_batch` (migration
/// `0004_take_for_a_batch.sql`) over every member's lines, the members one after another. Its
/// first look without locks refuses at once what cannot succeed, before it locks every item in
/// id order, checks again and takes the totals.
pub fn take_sql(works: &[StockWork]) -> Option<String> {
    let lines = works
        .iter()
        .enumerate()
        .flat_map(|(member, work)| work.items.iter().map(move |line| (member, line)));
    let (mut members, mut ids, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
    for (member, line) in lines {
        members.push(i64::try_from(member).ok()?);
        ids.push(line.item_id.as_str());
        quantities.push(line.quantity);
    }
    Some(format!(
        "select stock_take_batch({}, {}, {})",
        twopc::sql::bigint_array(&members),
        twopc::sql::text_array(&ids)?,
        twopc::sql::bigint_array(&quantities)
    ))
}
