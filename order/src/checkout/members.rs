//! A batch's transaction: its branches built from the members' works, and what its outcome
//! means for each member.

use std::{collections::HashMap, sync::Arc, time::Instant};

use serde::Serialize;
use twopc::wire::{BranchRequest, Outcome, Refusal, TransactionRequest};

use super::calls::run_own;
use crate::{
    batch::{self, Attempt},
    db,
    error::Error,
    prepare, telemetry, State,
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

/// Refusal code of a checkout whose batch aborted for another member's reason, or for a
/// reason of its own that may only say what the members before it took.
pub(super) const BATCH_ABORTED: &str = "batch";

pub(super) fn batch_aborted() -> Refusal {
    Refusal::transient(BATCH_ABORTED, "the checkout's batch was aborted, try again")
}

/// The batches of this order instance.
pub type Batches = batch::Batches<Member, Arc<BatchResult>>;

/// One checkout's part of a batch.
pub struct Member {
    pub(super) order: db::Order,
    pub(super) lines: Vec<(String, i64)>,
    pub(super) budget: Instant,
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
    pub(super) fn for_member(&self, index: usize) -> Result<(Outcome, bool), Error> {
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
    pub(super) fn out_of_stock(&self, index: usize) -> Option<&[(String, i64)]> {
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

/// The stock participant, and its refusal for an item with too little stock.
const STOCK: &str = "stock";
const OUT_OF_STOCK: &str = "out_of_stock";

/// A batch's branches in the global lock order: order (prepared alongside the others, see
/// [`BranchRequest::concurrent`]), payment, stock, each with the works of
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
            // It locks only the orders this transaction has claimed.
            concurrent: participant == prepare::PARTICIPANT,
        };
        (branch, positions)
    })
    .collect())
}

/// Runs one batch's transaction (see [`crate::batch`]) and tells which member a refusal was
/// about.
pub(super) async fn run_batch(
    state: State,
    attempt: Attempt,
    members: Vec<Member>,
) -> Arc<BatchResult> {
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
