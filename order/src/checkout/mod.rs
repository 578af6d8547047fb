//! Checkout: one global transaction through the coordinator, shared with the checkouts of
//! this instance that are ready at the same moment ([`crate::batch`]).
//!
//! The reply tells the truth in every case:
//! * committed: 200 once every branch is committed, so a read right after sees it. If a
//!   participant's database is away past the reply wait (`PHASE_TWO_WAIT_MS`), the coordinator
//!   answers `committing` and the checkout follows the transaction until it is visible; only
//!   if that database stays away for the rest of the budget is the 200 given before its
//!   branch is committed (it is decided and will be; a read of that database fails meanwhile);
//! * the order branch found the order already paid: 200, nothing charged;
//! * refused for a business reason: 400 with the reason, nothing changed;
//! * aborted for a transient reason (a participant unreachable, a lock wait ran out): 409,
//!   nothing changed, safe to retry;
//! * the coordinator's reply was lost (it crashed, the connection broke, it stopped
//!   answering): any coordinator is asked for the outcome until one knows it; only if none
//!   can tell within the checkout's budget is the answer 503.
//!
//! **A checkout belongs to its order.** Before a transaction is handed to a coordinator, its
//! txid and deadline are written on the order row (a compare-and-set claim, see
//! [`db::claim`]). A second checkout of the same order (a gateway's retry after an instance
//! died, a client's retry, a concurrent duplicate, on any instance, after any restart) finds
//! the claim and follows that transaction to its outcome instead of starting another: 200 if
//! it committed, its real reason if it was refused. The order branch pays the order only for
//! the claimed txid, so a superseded transaction can never commit. A claim is taken over only
//! once its transaction is known to have aborted, which every coordinator can establish once
//! the transaction's deadline has passed.
//!
//! **A batch's refusal is one member's.** A batch commits or aborts as a whole. Only a
//! business refusal of the first member of a branch's work is that checkout's answer; any
//! other refused member runs again alone, and the other members of the aborted batch run
//! again at once (`BatchResult::for_member`). A checkout that follows another's claim takes
//! a commit for its own only if its order is paid (`followed`).
//!
//! **Transient aborts are retried here**, with a fresh transaction, as long as another whole
//! attempt fits in the checkout's budget: a lock queue that ran out, a participant instance
//! that died mid-vote, a coordinator that stopped. 409 only when the budget is spent and
//! nothing for the order can still commit.
//!
//! **A sold-out item is refused without a transaction.** After a checkout was refused out of
//! stock, later checkouts of its items first look at their committed stock and, if it is
//! short, answer 400 at once ([`crate::stock`]).
//!
//! **Admission.** A checkout first waits for a place among the checkouts this instance runs
//! at once ([`crate::admission`]); one that waits too long is refused for load (503), before
//! anything was claimed or prepared.
//!
//! Deadlines nest: each attempt's transaction deadline (phase one, `PHASE_ONE_MS`) < its
//! reply deadline (+ `PHASE_TWO_WAIT_MS`) < the call's timeout (+ 1 s) < the checkout's budget
//! (`CHECKOUT_DEADLINE_MS`) < the gateway's server timeout.
//!
//! While the order database fails over (a few seconds with Patroni) the claim is retried; if
//! the database stays away the answer is 409: nothing was done, and a 5xx would make clients
//! count a checkout as maybe applied.

mod calls;
mod members;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use twopc::wire::{Outcome, Refusal};
use uuid::Uuid;

use crate::{batch::Attempt, db, error::Error, prepare, stock, telemetry, State};

use calls::follow;
use members::{batch_aborted, run_batch, Member, BATCH_ABORTED};

pub use members::Batches;

/// Runs a checkout and returns the success message, or the error that says why not.
pub async fn checkout(state: &State, order_id: &str) -> Result<&'static str, Error> {
    let started = Instant::now();
    let mut reason = "none";
    let result = match state.admission.enter().await {
        Some(_place) => run(state, order_id, &mut reason).await,
        None => Err(Error::Overloaded),
    };
    let outcome = match &result {
        Ok(Checkout::Committed) => "committed",
        Ok(Checkout::AlreadyPaid) => "already_paid",
        Err(Error::UnknownOrder(_)) => {
            reason = "unknown_order";
            "rejected"
        }
        Err(Error::Rejected(_)) => "rejected",
        Err(Error::OutcomeUnknown) => "unknown",
        Err(Error::Overloaded) => "overloaded",
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
    let budget = Instant::now() + state.config.checkout_deadline();
    // The claim this checkout expects to find: `Some(t)` once `t` is known to have aborted.
    let mut expected: Option<Uuid> = None;
    // The next attempt runs in a batch of its own (a refusal in a batch may not be its own).
    let mut alone = false;
    let mut attempts = 0u32;
    loop {
        let runner = {
            let state = state.clone();
            move |attempt, members| run_batch(state, attempt, members)
        };
        let Some(ticket) = state.batches.join(alone, budget, runner) else {
            if let Some(aborted) = expected {
                release(state, order_id, aborted).await;
            }
            return Err(Error::Aborted(
                "the checkout ran out of time, try again".to_owned(),
            ));
        };
        let attempt = ticket.attempt();
        let claim = claim(state, order_id, expected, &attempt).await?;
        let (txid, outcome) = match claim {
            db::Claim::Unknown => return Err(Error::UnknownOrder(order_id.to_owned())),
            db::Claim::Paid => return Ok(Checkout::AlreadyPaid),
            db::Claim::Mine(order) => {
                let lines = quantities(&order)?;
                if let Some(short) = stock::look(state, &lines).await {
                    release(state, order_id, attempt.txid).await;
                    *reason = "out_of_stock";
                    return Err(Error::Rejected(short));
                }
                attempts += 1;
                let member = Member {
                    order,
                    lines,
                    budget,
                };
                let Some((index, result)) = ticket.run(member).await else {
                    return Err(Error::OutcomeUnknown);
                };
                let (outcome, own_refusal) = result.for_member(index)?;
                if own_refusal {
                    if let Some(lines) = result.out_of_stock(index) {
                        state
                            .sold_out
                            .note(lines.iter().map(|(item, _)| item.as_str()));
                    }
                }
                alone = own_refusal
                    && matches!(&outcome, Outcome::Aborted { refusal, .. } if !refusal.business);
                (attempt.txid, outcome)
            }
            db::Claim::Theirs { txid, deadline } => {
                drop(ticket);
                tracing::info!(%txid, order_id, "checkout already in flight; following it");
                let outcome = follow(state, txid, deadline, budget).await;
                (txid, followed(state, order_id, txid, outcome).await)
            }
        };
        match outcome {
            Outcome::Committed => return Ok(Checkout::Committed),
            Outcome::Committing => {
                tracing::warn!(%txid, order_id, "committed, a branch still being finished at the deadline");
                return Ok(Checkout::Committed);
            }
            Outcome::Pending | Outcome::Unknown => return Err(Error::OutcomeUnknown),
            Outcome::Aborted {
                participant,
                refusal,
            } => {
                *reason = bounded_reason(&refusal);
                let last = refusal.business || !state.batches.fits(budget);
                if last {
                    release(state, order_id, txid).await;
                }
                if participant == prepare::PARTICIPANT && refusal.code == prepare::ALREADY_PAID {
                    return Ok(Checkout::AlreadyPaid);
                }
                if refusal.business {
                    return Err(Error::Rejected(refusal.message));
                }
                if last {
                    return Err(Error::Aborted(refusal.message));
                }
                tracing::debug!(%txid, code = %refusal.code, attempts, "transient abort; trying again");
                metrics::counter!(telemetry::CHECKOUT_RETRIES, "reason" => *reason).increment(1);
                expected = Some(txid);
                // A participant or coordinator that is away needs a moment; a lock queue, or
                // a batch that another member's refusal aborted, does not.
                if refusal.code != BATCH_ABORTED {
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempts.min(20))))
                        .await;
                }
            }
        }
    }
}

/// What a checkout that followed someone else's transaction makes of its outcome. A refusal
/// of one member of a batch is not this order's (`transient`: the checkout runs its own
/// transaction). A commit is this order's only if the order is paid: a checkout that claimed
/// its order for a batch and was cancelled before it handed its work over left the claim
/// behind for a batch that committed without it. An unpaid order is known to be out of a
/// commit only once every branch committed; until then, or while the order cannot be read,
/// the outcome is unknown.
async fn followed(state: &State, order_id: &str, txid: Uuid, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Aborted {
            participant,
            refusal,
        } if refusal.member.is_some() => {
            tracing::debug!(%txid, %participant, code = %refusal.code, "followed batch refused another member");
            Outcome::Aborted {
                participant,
                refusal: batch_aborted(),
            }
        }
        Outcome::Committed | Outcome::Committing => {
            let committed = matches!(outcome, Outcome::Committed);
            match service_kit::db::read(|| db::find_order(&state.pool, order_id)).await {
                Ok(Some(order)) if order.paid => outcome,
                // Every branch committed, the order's too, and the order is not paid: it was
                // not in that transaction. Taking the claim over from `txid` is safe.
                Ok(_) if committed => Outcome::Aborted {
                    participant: "coordinator".to_owned(),
                    refusal: Refusal::transient(
                        "not_in_batch",
                        "the order's claim outlived its checkout, try again",
                    ),
                },
                // The order's branch may still be committing: whether it was in the
                // transaction is not known yet, and answering a refusal could be false.
                Ok(_) => Outcome::Unknown,
                Err(error) => {
                    tracing::warn!(%txid, %error, "cannot read the order after its transaction committed");
                    Outcome::Unknown
                }
            }
        }
        outcome => outcome,
    }
}

/// Clears the claim of `txid`, which aborted: later checkouts need not follow it. A failure
/// only costs the next checkout a status question.
async fn release(state: &State, order_id: &str, txid: Uuid) {
    if let Err(error) = db::release(&state.claims, order_id, txid).await {
        tracing::warn!(%txid, %error, "claim not released; the next checkout finds it aborted");
    }
}

/// How long a checkout waits for the order database to come back before answering 409.
const DATABASE_WAIT: Duration = Duration::from_secs(10);

/// Claims the order for the attempt's transaction (or finds who holds it), retrying while the
/// order database is unreachable: a repeated claim of our own txid finds it ours.
async fn claim(
    state: &State,
    order_id: &str,
    expected: Option<Uuid>,
    attempt: &Attempt,
) -> Result<db::Claim, Error> {
    let deadline = Instant::now() + DATABASE_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        let claimed = async {
            let mut connection = state.claims.acquire().await?;
            db::claim(
                &mut connection,
                order_id,
                expected,
                attempt.txid,
                attempt.deadline,
            )
            .await
        }
        .await;
        match claimed {
            Ok(claim) => return Ok(claim),
            Err(error) if service_kit::db::is_unavailable(&error) => {
                service_kit::db::note_broken(&error);
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

/// The order's items, one line per item with its quantities summed, by item id.
fn quantities(order: &db::Order) -> Result<Vec<(String, i64)>, Error> {
    let mut quantities: BTreeMap<&str, i64> = BTreeMap::new();
    for (item_id, quantity) in &order.items {
        let sum = quantities.entry(item_id).or_insert(0);
        *sum = sum.checked_add(*quantity).ok_or(Error::Overflow)?;
    }
    Ok(quantities
        .into_iter()
        .map(|(item_id, quantity)| (item_id.to_owned(), quantity))
        .collect())
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
        "superseded" => "superseded",
        "timeout" => "timeout",
        BATCH_ABORTED => BATCH_ABORTED,
        "not_in_batch" => "not_in_batch",
        _ => "other",
    }
}
