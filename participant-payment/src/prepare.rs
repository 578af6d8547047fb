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

/// Charges the work's amount, or says why not.
pub async fn charge(
    conn: &mut PgConnection,
    work: &PaymentWork,
) -> sqlx::Result<std::result::Result<(), Refusal>> {
    match db::pay(conn, &work.user_id, work.amount).await {
        Ok(()) => Ok(Ok(())),
        Err(error @ Error::UnknownUser(_)) => {
            Ok(Err(Refusal::business("unknown_user", error.to_string())))
        }
        Err(error @ Error::InsufficientCredit { .. }) => Ok(Err(Refusal::business(
            "insufficient_credit",
            error.to_string(),
        ))),
        Err(Error::Database(error)) => Err(error),
        Err(other) => Err(sqlx::Error::Protocol(format!("unexpected: {other}"))),
    }
}
