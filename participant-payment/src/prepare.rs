//! The payment branch of a checkout: what it asks for and how it is charged.

use serde::Deserialize;
use service_kit::parse_id;

use crate::error::{Error, Result};

/// The payment branch's work: charge `amount` to the user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentWork {
    pub user_id: String,
    pub amount: i64,
}

impl PaymentWork {
    /// Reads and checks the work: a valid id and an amount of at least 0 (an order with no
    /// items costs nothing, but its user must still exist).
    pub fn from_json(work: serde_json::Value) -> Result<Self> {
        let work: Self =
            serde_json::from_value(work).map_err(|error| Error::Work(error.to_string()))?;
        parse_id("user_id", &work.user_id)?;
        if work.amount < 0 {
            return Err(Error::Work(format!(
                "amount must be at least 0, got {}",
                work.amount
            )));
        }
        Ok(work)
    }
}

/// The members' charges as SQL text: the database's `payment_charge_batch` (migration
/// `0004_charge_for_a_batch.sql`), which locks every member's user in id order, checks each
/// member against what the members before it left, and charges the totals.
pub fn charge_sql(works: &[PaymentWork]) -> Option<String> {
    let (users, amounts): (Vec<&str>, Vec<i64>) = works
        .iter()
        .map(|work| (work.user_id.as_str(), work.amount))
        .unzip();
    Some(format!(
        "select payment_charge_batch({}, {})",
        twopc::sql::text_array(&users)?,
        twopc::sql::bigint_array(&amounts)
    ))
}
