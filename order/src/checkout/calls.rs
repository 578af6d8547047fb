//! Calls to the coordinators: handing them a transaction, and asking for its outcome.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use twopc::{
    wire::{Outcome, Refusal, StatusQuery, TransactionRequest},
    Deadline,
};
use uuid::Uuid;

use crate::{
    batch::{Attempt, REPLY_MARGIN},
    error::Error,
    State,
};

/// Hands the transaction to a live coordinator and returns its outcome; if the reply is lost,
/// follows the transaction until its outcome is known or the budget is spent.
pub(super) async fn run_own(
    state: &State,
    request: &TransactionRequest,
    attempt: &Attempt,
    budget: Instant,
) -> Result<Outcome, Error> {
    let txid = attempt.txid;
    let timeout = attempt.reply_by.remaining().unwrap_or_default() + REPLY_MARGIN;
    let mut delivered = false;
    for index in state.coordinators.order() {
        let url = state
            .coordinators
            .url(index)
            .join(twopc::wire::routes::TRANSACTIONS)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let sent = state
            .http
            .post(url)
            .timeout(timeout)
            .json(&request)
            .send()
            .await;
        let response = match sent {
            // Never reached that coordinator: nothing happened there; try the next one.
            Err(error) if error.is_connect() => {
                tracing::warn!(%txid, %error, "coordinator unreachable");
                state.coordinators.mark_down(index);
                continue;
            }
            Err(error) => {
                if error.is_timeout() {
                    state.coordinators.mark_down(index);
                }
                tracing::warn!(%txid, %error, "coordinator reply lost");
                delivered = true;
                break;
            }
            Ok(response) => response,
        };
        delivered = true;
        let status = response.status();
        if status.is_success() {
            match response.json::<Outcome>().await {
                // Decided, not yet visible everywhere (or a repeat that is still running):
                // followed until it is.
                Ok(Outcome::Committing | Outcome::Pending | Outcome::Unknown) => break,
                Ok(outcome) => return Ok(outcome),
                Err(error) => {
                    tracing::warn!(%txid, %error, "coordinator reply lost");
                    break;
                }
            }
        }
        let text = response.text().await.unwrap_or_default();
        if status == StatusCode::BAD_REQUEST {
            return Err(Error::Internal(format!(
                "coordinator refused the transaction: {status} {text}"
            )));
        }
        tracing::warn!(%txid, %status, %text, "coordinator failed");
        break;
    }
    if !delivered {
        // No coordinator accepted a connection: the transaction exists nowhere.
        return Ok(Outcome::Aborted {
            participant: "coordinator".to_owned(),
            refusal: Refusal::transient("unavailable", "no coordinator is available, try again"),
        });
    }
    Ok(follow(state, txid, attempt.deadline, budget).await)
}

/// Asks the coordinators for the outcome of `txid` (whose deadline is `deadline`) until one
/// knows it or the budget is spent. Any coordinator can answer: a committed transaction is in
/// the shared log, and once `deadline` has passed an undecided one is fenced off as aborted.
/// A commit that is decided but not yet visible (`committing`) is followed until it is, or
/// returned as such at the budget.
///
/// A transaction that no coordinator has heard of for [`UNHEARD_OF`] of asking never reached
/// one (its order instance stopped after claiming the order) or was lost with one that
/// stopped: it is fenced off then rather than at its deadline, so a retry of its checkout
/// does not wait out a transaction that cannot finish.
pub(super) async fn follow(
    state: &State,
    txid: Uuid,
    deadline: Deadline,
    budget: Instant,
) -> Outcome {
    let mut pause = Duration::from_millis(20);
    let mut known = Outcome::Pending;
    let mut unheard_since: Option<Instant> = None;
    loop {
        let fence = unheard_since.is_some_and(|since| since.elapsed() >= UNHEARD_OF);
        let mut heard = false;
        let mut unheard = false;
        for index in state.coordinators.order() {
            // Never fence what a coordinator has just said it runs.
            let query = StatusQuery {
                deadline,
                fence: fence && !heard,
            };
            match ask(state, index, txid, &query).await {
                None => {}
                Some(Outcome::Unknown) => unheard = true,
                Some(Outcome::Pending) => heard = true,
                Some(Outcome::Committing) => {
                    heard = true;
                    known = Outcome::Committing;
                }
                Some(outcome) => {
                    tracing::info!(%txid, ?outcome, fence, "outcome learned from a coordinator");
                    return outcome;
                }
            }
        }
        if heard || !unheard {
            unheard_since = None;
        } else {
            unheard_since.get_or_insert_with(Instant::now);
        }
        if Instant::now() + pause >= budget {
            if matches!(known, Outcome::Pending | Outcome::Unknown) {
                tracing::error!(%txid, "outcome still unknown at the checkout's deadline");
                return Outcome::Pending;
            }
            return known;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// How long a transaction may go unheard of by every coordinator that answers before a
/// follower fences it off: far longer than a request takes to reach a live coordinator.
const UNHEARD_OF: Duration = Duration::from_secs(1);

/// One status question to one coordinator; `None` if it did not answer.
async fn ask(state: &State, index: usize, txid: Uuid, query: &StatusQuery) -> Option<Outcome> {
    let url = state
        .coordinators
        .url(index)
        .join(&format!("{}/{txid}", twopc::wire::routes::TRANSACTIONS))
        .ok()?;
    let asked = state
        .http
        .get(url)
        .query(query)
        .timeout(STATUS_TIMEOUT)
        .send()
        .await;
    match asked {
        Ok(response) if response.status().is_success() => match response.json::<Outcome>().await {
            Ok(outcome) => Some(outcome),
            Err(error) => {
                tracing::warn!(%txid, %error, "bad outcome reply");
                None
            }
        },
        Ok(response) => {
            tracing::debug!(%txid, status = %response.status(), "outcome not available");
            None
        }
        Err(error) => {
            if error.is_connect() || error.is_timeout() {
                state.coordinators.mark_down(index);
            }
            tracing::debug!(%txid, %error, "coordinator not answering");
            None
        }
    }
}

/// Bound on one status question; the coordinator answers it from memory or one log lookup.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
