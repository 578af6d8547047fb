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

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde::Serialize;
use twopc::{
    wire::{BranchRequest, Outcome, Refusal, StatusQuery, TransactionRequest},
    Deadline,
};
use uuid::Uuid;

use crate::{
    batch::{self, Attempt, REPLY_MARGIN},
    db,
    error::Error,
    prepare, stock, telemetry, State,
};

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

/// Refusal code of a checkout whose batch aborted for another member's reason, or for a
/// reason of its own that may only say what the members before it took.
const BATCH_ABORTED: &str = "batch";

fn batch_aborted() -> Refusal {
    Refusal::transient(BATCH_ABORTED, "the checkout's batch was aborted, try again")
}

/// What a checkout that followed someone else's transaction makes of its outcome. A refusal
/// of one member of a batch is not this order's (`transient`: the checkout runs its own
/// transaction). A commit is this order's only if the order is paid: a checkout that claimed
/// its order for a batch and was cancelled before it handed its work over left the claim
/// behind for a batch that committed without it.
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
            match db::find_order(&state.pool, order_id).await {
                Ok(Some(order)) if order.paid => outcome,
                Ok(_) => {
                    // Not paid (or its branch not committed yet): taking the claim over from
                    // `txid` waits for that branch, and finds the order paid if it was in it.
                    Outcome::Aborted {
                        participant: "coordinator".to_owned(),
                        refusal: Refusal::transient(
                            "not_in_batch",
                            "the order's claim outlived its checkout, try again",
                        ),
                    }
                }
                Err(error) => {
                    tracing::warn!(%txid, %error, "cannot read the order after its transaction committed");
                    Outcome::Aborted {
                        participant: "coordinator".to_owned(),
                        refusal: Refusal::transient(
                            "unavailable",
                            "the order database is unavailable, try again",
                        ),
                    }
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

/// The batches of this order instance.
pub type Batches = batch::Batches<Member, Arc<BatchResult>>;

/// One checkout's part of a batch.
pub struct Member {
    order: db::Order,
    lines: Vec<(String, i64)>,
    budget: Instant,
}

/// A batch's outcome, and which member a participant's refusal was about.
pub struct BatchResult {
    outcome: Result<Outcome, String>,
    /// The member refused, and whether it came first in that participant's work (then a
    /// business refusal is the truth about it alone).
    refused: Option<(usize, bool)>,
    /// For each member, the first member with its order (itself, but for a duplicate).
    canonical: Vec<usize>,
    /// Each member's items, for the sold-out memory.
    lines: Vec<Vec<(String, i64)>>,
}

impl BatchResult {
    /// The outcome for member `index`, and whether the refusal (if any) was about it.
    fn for_member(&self, index: usize) -> Result<(Outcome, bool), Error> {
        let outcome = self.outcome.clone().map_err(Error::Internal)?;
        let Outcome::Aborted {
            participant,
            mut refusal,
        } = outcome
        else {
            return Ok((outcome, false));
        };
        let Some((member, first)) = self.refused else {
            return Ok((
                Outcome::Aborted {
                    participant,
                    refusal,
                },
                false,
            ));
        };
        refusal.member = None;
        let own = self.canonical.get(index) == Some(&member);
        if refusal.business && !(own && first) {
            refusal = batch_aborted();
        }
        Ok((
            Outcome::Aborted {
                participant,
                refusal,
            },
            own,
        ))
    }

    /// Member `index`'s items, if the batch was refused because one of them is out of stock.
    fn out_of_stock(&self, index: usize) -> Option<&[(String, i64)]> {
        match &self.outcome {
            Ok(Outcome::Aborted {
                participant,
                refusal,
            }) if participant == STOCK && refusal.code == OUT_OF_STOCK => {
                self.lines.get(index).map(Vec::as_slice)
            }
            _ => None,
        }
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

/// The stock participant, and its refusal for an item with too little stock.
const STOCK: &str = "stock";
const OUT_OF_STOCK: &str = "out_of_stock";

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

/// A batch's branches in the global lock order: order, payment, stock, each with the works of
/// its members in the batch's order, and for each branch the batch positions of its members.
/// Members with nothing to do for a participant are left out of its work, and a participant
/// with nothing to do is left out.
fn branches(members: &[&Member]) -> Result<Vec<(BranchRequest, Vec<usize>)>, Error> {
    let json = |value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| Error::Internal(e.to_string()))
    };
    let mut orders = Vec::with_capacity(members.len());
    let mut payments = Vec::with_capacity(members.len());
    let mut stocks = Vec::with_capacity(members.len());
    for (index, member) in members.iter().enumerate() {
        let order = &member.order;
        orders.push((
            index,
            json(serde_json::to_value(prepare::OrderWork {
                order_id: order.id.clone(),
                version: order.version,
            }))?,
        ));
        if order.total_cost > 0 {
            payments.push((
                index,
                json(serde_json::to_value(PaymentWork {
                    user_id: &order.user_id,
                    amount: order.total_cost,
                }))?,
            ));
        }
        if !member.lines.is_empty() {
            let items = member
                .lines
                .iter()
                .map(|(item_id, quantity)| StockLine {
                    item_id: item_id.clone(),
                    quantity: *quantity,
                })
                .collect();
            stocks.push((index, json(serde_json::to_value(StockWork { items }))?));
        }
    }
    Ok([
        (prepare::PARTICIPANT, orders),
        ("payment", payments),
        (STOCK, stocks),
    ]
    .into_iter()
    .filter(|(_, works)| !works.is_empty())
    .map(|(participant, works)| {
        let (positions, works): (Vec<usize>, Vec<serde_json::Value>) = works.into_iter().unzip();
        let branch = BranchRequest {
            participant: participant.to_owned(),
            work: serde_json::Value::Array(works),
        };
        (branch, positions)
    })
    .collect())
}

/// Runs one batch's transaction (see [`crate::batch`]) and tells which member a refusal was
/// about.
async fn run_batch(state: State, attempt: Attempt, members: Vec<Member>) -> Arc<BatchResult> {
    metrics::histogram!(telemetry::CHECKOUT_BATCH_SIZE).record(members.len() as f64);
    let budget = members
        .iter()
        .map(|member| member.budget)
        .min()
        .unwrap_or_else(Instant::now);
    let lines = members.iter().map(|member| member.lines.clone()).collect();
    // Two checkouts of one order in one batch (a duplicate request that arrived meanwhile:
    // it finds the order claimed by this very txid, as a retry of a lost claim would) are one
    // member: the order is paid and charged once, and both get its outcome.
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(members.len());
    let mut unique: Vec<&Member> = Vec::with_capacity(members.len());
    let mut originals: Vec<usize> = Vec::with_capacity(members.len());
    let canonical: Vec<usize> = members
        .iter()
        .enumerate()
        .map(|(index, member)| {
            *first_of.entry(member.order.id.as_str()).or_insert_with(|| {
                unique.push(member);
                originals.push(index);
                index
            })
        })
        .collect();
    let branches = match branches(&unique) {
        Ok(branches) => branches,
        Err(error) => {
            return Arc::new(BatchResult {
                outcome: Err(error.to_string()),
                refused: None,
                canonical,
                lines,
            })
        }
    };
    let (requests, positions): (Vec<BranchRequest>, Vec<Vec<usize>>) = branches.into_iter().unzip();
    let names: Vec<String> = requests.iter().map(|b| b.participant.clone()).collect();
    let request = TransactionRequest {
        txid: attempt.txid,
        branches: requests,
        deadline: attempt.deadline,
        reply_by: attempt.reply_by,
    };
    let outcome = run_own(&state, &request, &attempt, budget).await;
    let refused = match &outcome {
        Ok(Outcome::Aborted {
            participant,
            refusal,
        }) => refusal.member.and_then(|at| {
            let branch = names.iter().position(|name| name == participant)?;
            let member = originals[*positions[branch].get(at)?];
            Some((member, at == 0))
        }),
        _ => None,
    };
    Arc::new(BatchResult {
        outcome: outcome.map_err(|error| error.to_string()),
        refused,
        canonical,
        lines,
    })
}

/// Hands the transaction to a live coordinator and returns its outcome; if the reply is lost,
/// follows the transaction until its outcome is known or the budget is spent.
async fn run_own(
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
async fn follow(state: &State, txid: Uuid, deadline: Deadline, budget: Instant) -> Outcome {
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
