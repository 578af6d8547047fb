//! Checkout: one global transaction through the coordinator.
//!
//! The reply tells the truth in every case:
//! * committed: 200; the coordinator replies after phase two, so a read right after sees it;
//! * the order branch found the order already paid: 200, nothing charged;
//! * refused for a business reason: 400 with the reason, nothing changed;
//! * aborted for a transient reason (a participant unreachable, a lock wait ran out): 409,
//!   nothing changed, safe to retry;
//! * the coordinator's reply was lost (it crashed, the connection broke): ask it for the
//!   outcome until it answers (a restarted coordinator answers once it has recovered); only if
//!   that takes longer than `outcome_deadline` is the answer 503.
//!
//! The order is read before anything is started, so while its database fails over (a few
//! seconds with Patroni) the read is retried, and if the database stays away the answer is
//! 409: nothing was done, and a 5xx would make clients count a checkout as maybe applied.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio_retry::{strategy::ExponentialBackoff, RetryIf};
use twopc::wire::{BranchRequest, Outcome, Refusal, TransactionRequest};
use uuid::Uuid;

use crate::{db, error::Error, prepare, telemetry, State};

#[derive(Serialize)]
struct PaymentWork<'a> {
    user_id: &'a str,
    amount: i64,
}

#[derive(Serialize)]
struct StockWork {
    items: Vec<StockLine>,
}

#[derive(Serialize)]
struct StockLine {
    item_id: String,
    quantity: i64,
}

/// Runs a checkout and returns the success message, or the error that says why not.
pub async fn checkout(state: &State, order_id: &str) -> Result<&'static str, Error> {
    let started = Instant::now();
    let mut reason = "none";
    let result = run(state, order_id, &mut reason).await;
    let outcome = match &result {
        Ok(Checkout::Committed) => "committed",
        Ok(Checkout::AlreadyPaid) => "already_paid",
        Err(Error::UnknownOrder(_)) => {
            reason = "unknown_order";
            "rejected"
        }
        Err(Error::Rejected(_)) => "rejected",
        Err(Error::OutcomeUnknown) => "unknown",
        Err(_) => "failed",
    };
    metrics::counter!(telemetry::CHECKOUTS, "outcome" => outcome, "reason" => reason).increment(1);
    metrics::histogram!(telemetry::CHECKOUT_DURATION, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result.map(|done| match done {
        Checkout::Committed => "checkout committed",
        Checkout::AlreadyPaid => "order already paid",
    })
}

enum Checkout {
    Committed,
    AlreadyPaid,
}

/// Runs the checkout; `reason` receives the refusal code of an abort (a bounded label).
async fn run(state: &State, order_id: &str, reason: &mut &'static str) -> Result<Checkout, Error> {
    let order = find_order(state, order_id)
        .await?
        .ok_or_else(|| Error::UnknownOrder(order_id.to_owned()))?;
    if order.paid {
        return Ok(Checkout::AlreadyPaid);
    }
    let request = TransactionRequest {
        txid: Uuid::new_v4(),
        branches: branches(&order)?,
    };
    let outcome = decide(state, &request).await?;
    match outcome {
        Outcome::Committed => Ok(Checkout::Committed),
        Outcome::Aborted {
            participant,
            refusal,
        } => {
            *reason = bounded_reason(&refusal);
            if participant == prepare::PARTICIPANT && refusal.code == prepare::ALREADY_PAID {
                Ok(Checkout::AlreadyPaid)
            } else if refusal.business {
                Err(Error::Rejected(refusal.message))
            } else {
                Err(Error::Aborted(refusal.message))
            }
        }
        Outcome::Pending => Err(Error::OutcomeUnknown),
    }
}

/// How long a checkout waits for the order database to come back before answering 409.
const DATABASE_WAIT: Duration = Duration::from_secs(20);

/// Reads the order, retrying while its database is unreachable (a read is safe to repeat).
async fn find_order(state: &State, order_id: &str) -> Result<Option<db::Order>, Error> {
    let deadline = Instant::now() + DATABASE_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        match db::find_order(&state.pool, order_id).await {
            Ok(order) => return Ok(order),
            Err(error) if service_kit::db::is_unavailable(&error) => {
                if Instant::now() >= deadline {
                    tracing::warn!(%error, "order database unavailable; checkout not started");
                    return Err(Error::Aborted(
                        "the order database is unavailable, try again".to_owned(),
                    ));
                }
                tracing::debug!(%error, "order database unavailable; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The transaction's branches in the global lock order: order, payment, stock. Branches with
/// nothing to do are left out.
fn branches(order: &db::Order) -> Result<Vec<BranchRequest>, Error> {
    let mut branches = vec![BranchRequest {
        participant: prepare::PARTICIPANT.to_owned(),
        work: serde_json::to_value(prepare::OrderWork {
            order_id: order.id.clone(),
            version: order.version,
        })
        .map_err(|e| Error::Internal(e.to_string()))?,
    }];
    if order.total_cost > 0 {
        branches.push(BranchRequest {
            participant: "payment".to_owned(),
            work: serde_json::to_value(PaymentWork {
                user_id: &order.user_id,
                amount: order.total_cost,
            })
            .map_err(|e| Error::Internal(e.to_string()))?,
        });
    }
    let mut quantities: BTreeMap<&str, i64> = BTreeMap::new();
    for (item_id, quantity) in &order.items {
        let sum = quantities.entry(item_id).or_insert(0);
        *sum = sum.checked_add(*quantity).ok_or(Error::Overflow)?;
    }
    if !quantities.is_empty() {
        let items = quantities
            .into_iter()
            .map(|(item_id, quantity)| StockLine {
                item_id: item_id.to_owned(),
                quantity,
            })
            .collect();
        branches.push(BranchRequest {
            participant: "stock".to_owned(),
            work: serde_json::to_value(StockWork { items })
                .map_err(|e| Error::Internal(e.to_string()))?,
        });
    }
    Ok(branches)
}

/// Hands the transaction to the coordinator and returns its outcome, asking again if the
/// reply is lost.
async fn decide(state: &State, request: &TransactionRequest) -> Result<Outcome, Error> {
    let url = state
        .config
        .coordinator_urls[0]
        .join(twopc::wire::routes::TRANSACTIONS)
        .map_err(|e| Error::Internal(e.to_string()))?;
    // A connection that was never made delivered nothing: retrying it is safe, and covers a
    // coordinator being restarted.
    let strategy = ExponentialBackoff::from_millis(2)
        .factor(50)
        .max_delay(Duration::from_secs(1))
        .take(15);
    let sent = RetryIf::start(
        strategy,
        || state.http.post(url.clone()).json(request).send(),
        |error: &reqwest::Error| error.is_connect(),
    )
    .await;
    match sent {
        Ok(response) if response.status().is_success() => match response.json::<Outcome>().await {
            Ok(outcome) => return Ok(outcome),
            Err(error) => tracing::warn!(txid = %request.txid, %error, "coordinator reply lost"),
        },
        Ok(response) if response.status().is_client_error() => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(Error::Internal(format!(
                "coordinator refused the transaction: {status} {text}"
            )));
        }
        Ok(response) => {
            tracing::warn!(txid = %request.txid, status = %response.status(), "coordinator failed")
        }
        Err(error) if error.is_connect() => {
            // Never reached the coordinator: nothing happened.
            tracing::warn!(txid = %request.txid, %error, "coordinator unreachable");
            return Ok(Outcome::Aborted {
                participant: "coordinator".to_owned(),
                refusal: Refusal::transient(
                    "unavailable",
                    "the coordinator is unavailable, try again",
                ),
            });
        }
        Err(error) => tracing::warn!(txid = %request.txid, %error, "coordinator reply lost"),
    }
    ask_outcome(state, request.txid).await
}

/// Polls the coordinator for the outcome of `txid` until it is known or the deadline passes.
async fn ask_outcome(state: &State, txid: Uuid) -> Result<Outcome, Error> {
    let url = state
        .config
        .coordinator_urls[0]
        .join(&format!("{}/{txid}", twopc::wire::routes::TRANSACTIONS))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_millis(state.config.outcome_deadline_ms);
    let mut pause = Duration::from_millis(50);
    while Instant::now() < deadline {
        match state.http.get(url.clone()).send().await {
            Ok(response) if response.status().is_success() => {
                match response.json::<Outcome>().await {
                    Ok(Outcome::Pending) => {}
                    Ok(outcome) => {
                        tracing::info!(%txid, ?outcome, "outcome recovered from the coordinator");
                        return Ok(outcome);
                    }
                    Err(error) => tracing::warn!(%txid, %error, "bad outcome reply"),
                }
            }
            Ok(response) => {
                tracing::debug!(%txid, status = %response.status(), "outcome not available")
            }
            Err(error) => tracing::debug!(%txid, %error, "coordinator not answering"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    tracing::error!(%txid, "outcome still unknown at the deadline");
    Ok(Outcome::Pending)
}

/// Maps refusal codes to a fixed label set (metrics labels must stay bounded).
fn bounded_reason(refusal: &Refusal) -> &'static str {
    match refusal.code.as_str() {
        "out_of_stock" => "out_of_stock",
        "insufficient_credit" => "insufficient_credit",
        "unknown_item" => "unknown_item",
        "unknown_user" => "unknown_user",
        "unknown_order" => "unknown_order",
        "already_paid" => "already_paid",
        "order_changed" => "order_changed",
        "busy" => "busy",
        "unavailable" => "unavailable",
        "not_decided" => "not_decided",
        _ => "other",
    }
}
