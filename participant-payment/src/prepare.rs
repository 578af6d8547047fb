//! Phase one of a checkout's branch in the payment database: `POST /_2pc/prepare`.

use std::time::Duration;

use axum::{extract::State, Json};
use serde::Deserialize;
use service_kit::parse_id;
use sqlx::{PgConnection, PgPool};
use twopc::{
    branch::{timeout_refusal, Branch},
    wire::{PrepareRequest, Refusal, Vote},
    Gid,
};

use crate::{
    db,
    error::{Error, Result},
    AppState, PARTICIPANT, VOTES,
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

pub async fn prepare(
    State(state): State<AppState>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>> {
    let gid = Gid::parse(&request.gid)?;
    let work = PaymentWork::from_json(request.work)?;
    let lock_timeout = Duration::from_millis(request.lock_timeout_ms);
    let vote = match vote(&state.pool, &gid, lock_timeout, &work).await {
        Ok(vote) => vote,
        Err(error) => match timeout_refusal(&error) {
            Some(refusal) => Vote::No(refusal),
            None => return Err(error.into()),
        },
    };
    let label = match &vote {
        Vote::Yes => "yes",
        Vote::No(_) => "no",
    };
    metrics::counter!(VOTES, "participant" => PARTICIPANT, "vote" => label).increment(1);
    Ok(Json(vote))
}

#[tracing::instrument(skip(pool, work), fields(%gid))]
async fn vote(
    pool: &PgPool,
    gid: &Gid,
    lock_timeout: Duration,
    work: &PaymentWork,
) -> sqlx::Result<Vote> {
    let Some(mut branch) = Branch::begin(pool, gid, lock_timeout).await? else {
        return Ok(Vote::Yes);
    };
    match charge(branch.tx(), work).await? {
        Ok(()) => branch.prepare().await,
        Err(refusal) => branch.refuse(refusal).await,
    }
}

/// Charges the work's amount, or says why not.
async fn charge(
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
