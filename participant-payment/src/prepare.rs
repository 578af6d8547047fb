//! The payment branch of a checkout: what it asks for and how it is charged.

use serde::Deserialize;
use service_kit::parse_id;
use sqlx::PgConnection;
use twopc::wire::Refusal;

use crate::{
    db,
    error::{Error, Result},
};

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

/// Charges the work's amount, or says why not ([`db::charge`]).
pub async fn charge(
    conn: &mut PgConnection,
    work: &PaymentWork,
) -> sqlx::Result<std::result::Result<(), Refusal>> {
    db::charge(conn, &work.user_id, work.amount).await
}

/// [`charge`] as SQL text, for a branch sent in one round trip.
pub fn charge_sql(work: &PaymentWork) -> Option<String> {
    Some(format!(
        "select payment_charge({}, {})",
        twopc::sql::literal(&work.user_id)?,
        work.amount
    ))
}

/// Charges a batch's members as [`charge`] would one after another, all or none, or names the
/// first member that cannot pay: every user locked in id order and read, and one update of
/// the totals.
pub async fn charge_batch(
    conn: &mut PgConnection,
    works: &[PaymentWork],
) -> sqlx::Result<std::result::Result<(), (usize, Refusal)>> {
    let mut totals: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for work in works {
        let total = totals.entry(work.user_id.as_str()).or_insert(0);
        // Only used once every member can pay, when the sum is below the credit.
        *total = total.saturating_add(work.amount);
    }
    let ids: Vec<String> = totals.keys().map(|id| (*id).to_owned()).collect();
    let mut credit: std::collections::HashMap<String, i64> = db::lock_users(&mut *conn, &ids)
        .await?
        .into_iter()
        .collect();
    for (index, work) in works.iter().enumerate() {
        let error = match credit.get_mut(&work.user_id) {
            None => Error::UnknownUser(work.user_id.clone()),
            Some(left) if *left < work.amount => Error::InsufficientCredit {
                user_id: work.user_id.clone(),
                credit: *left,
                wanted: work.amount,
            },
            Some(left) => {
                *left -= work.amount;
                continue;
            }
        };
        let code = match error {
            Error::UnknownUser(_) => "unknown_user",
            _ => "insufficient_credit",
        };
        return Ok(Err((index, Refusal::business(code, error.to_string()))));
    }
    let amounts: Vec<i64> = totals.values().copied().collect();
    db::charge_locked(conn, &ids, &amounts).await?;
    Ok(Ok(()))
}
