//! The order's own branch of a checkout: `POST /_2pc/prepare` with `{order_id, version}`.
//!
//! It is the first branch prepared, so the order row is the first lock a checkout takes. The
//! branch pays the order only for the transaction that holds the order's checkout claim
//! (`orders.checkout_txid`, see `checkout`), so a transaction that was given up on and
//! superseded can never commit alongside its successor.

use axum::{extract::State as AxumState, http::StatusCode, Json};
use serde::{Deserialize, Serialize};
use twopc::{
    branch::{self, Branch},
    wire::{PrepareRequest, Refusal, Vote},
    Deadline, Gid,
};

use crate::{db, error::Error, telemetry, State};

/// The work of the order branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderWork {
    pub order_id: String,
    /// The order's version when it was priced; a concurrent addItem makes the branch vote no.
    pub version: i64,
}

/// The participant name of the order branch.
pub const PARTICIPANT: &str = "order";
/// Refusal code for an order that is paid already.
pub const ALREADY_PAID: &str = "already_paid";

/// Exports the order branch's votes as 0 from start-up, as the participants do theirs.
pub fn register_votes() {
    service_kit::telemetry::register_counters(
        telemetry::VOTES,
        &[
            &[("participant", PARTICIPANT), ("vote", "yes")],
            &[("participant", PARTICIPANT), ("vote", "no")],
        ],
    );
}

pub async fn prepare(
    AxumState(state): AxumState<State>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>, (StatusCode, String)> {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message);
    let gid = Gid::parse(&request.gid).map_err(|e| bad(e.to_string()))?;
    // One order's work, or a batch's: an array of them (see `crate::batch`).
    let batch = request.work.is_array();
    let works: Vec<OrderWork> = if batch {
        serde_json::from_value(request.work)
    } else {
        serde_json::from_value(request.work).map(|work| vec![work])
    }
    .map_err(|e| bad(format!("order work: {e}")))?;
    if works.is_empty() {
        return Err(bad(
            "order work: a batch needs at least one member".to_owned()
        ));
    }
    let vote = match vote(
        &state,
        &gid,
        &works,
        batch,
        request.deadline,
        request.repeat,
    )
    .await
    {
        Ok(vote) => vote,
        Err(error) => {
            service_kit::db::note_broken(&error);
            match branch::transient_refusal(&error) {
                Some(refusal) => Vote::No(refusal),
                None => {
                    let error = Error::from(error);
                    tracing::error!(%gid, %error, "order branch failed");
                    return Err((StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()));
                }
            }
        }
    };
    let label = if vote == Vote::Yes { "yes" } else { "no" };
    metrics::counter!(telemetry::VOTES, "participant" => PARTICIPANT, "vote" => label).increment(1);
    Ok(Json(vote))
}

/// Pays every order of the branch, all or none: the first that cannot be paid refuses the
/// branch (naming its member in a batch). A batch's orders are paid in one statement. The
/// order rows need no common lock order: each is claimed by this very transaction, so no
/// other branch waits for it.
async fn vote(
    state: &State,
    gid: &Gid,
    works: &[OrderWork],
    batch: bool,
    deadline: Deadline,
    repeat: bool,
) -> Result<Vote, sqlx::Error> {
    // A lone order's first send travels in one round trip; a repeat must first look whether
    // the branch is prepared already.
    if let ([work], false) = (works, repeat) {
        if let Some(sql) = pay_sql(work, gid.txid()) {
            return Ok(
                match Branch::run_in_one_trip(&state.pool, gid, deadline, &sql).await? {
                    Vote::No(refusal) if batch => Vote::No(refusal.of_member(0)),
                    vote => vote,
                },
            );
        }
    }
    let Some(mut branch) = Branch::begin(&state.pool, gid, deadline, repeat).await? else {
        return Ok(Vote::Yes);
    };
    let unpaid = match pay(branch.tx(), works, gid.txid()).await {
        Ok(unpaid) => unpaid,
        Err(error) => return Err(branch.fail(error).await),
    };
    match unpaid {
        None => branch.prepare().await,
        Some((index, unchanged)) => {
            let refusal = refusal(&works[index], unchanged);
            let refusal = if batch {
                refusal.of_member(index)
            } else {
                refusal
            };
            branch.refuse(refusal).await
        }
    }
}

/// Marks the orders paid; the first that cannot be, with why, if one cannot.
async fn pay(
    conn: &mut sqlx::PgConnection,
    works: &[OrderWork],
    txid: uuid::Uuid,
) -> Result<Option<(usize, db::Unchanged)>, sqlx::Error> {
    if let [work] = works {
        let marked = db::mark_paid(conn, &work.order_id, work.version, txid).await?;
        return Ok(marked.err().map(|unchanged| (0, unchanged)));
    }
    let ids: Vec<String> = works.iter().map(|w| w.order_id.clone()).collect();
    let versions: Vec<i64> = works.iter().map(|w| w.version).collect();
    let marked: std::collections::HashSet<String> = db::mark_all_paid(conn, &ids, &versions, txid)
        .await?
        .into_iter()
        .collect();
    let Some(index) = works.iter().position(|w| !marked.contains(&w.order_id)) else {
        return Ok(None);
    };
    let work = &works[index];
    let unchanged = db::why_not_paid(conn, &work.order_id, work.version, txid).await?;
    Ok(Some((index, unchanged)))
}

/// A lone order's work as SQL text, for a branch sent in one round trip: the database's
/// `order_pay` (migration `0004_pay_in_one_statement.sql`), which refuses as [`refusal`] does.
fn pay_sql(work: &OrderWork, txid: uuid::Uuid) -> Option<String> {
    Some(format!(
        "select order_pay({}, {}, '{txid}')",
        twopc::sql::literal(&work.order_id)?,
        work.version
    ))
}

fn refusal(work: &OrderWork, unchanged: db::Unchanged) -> Refusal {
    match unchanged {
        db::Unchanged::Unknown => Refusal::business(
            "unknown_order",
            format!("order {:?} not found", work.order_id),
        ),
        db::Unchanged::Paid => Refusal::business(ALREADY_PAID, "order is already paid"),
        db::Unchanged::Changed => Refusal::transient(
            "order_changed",
            "items were added to the order during checkout, try again",
        ),
        db::Unchanged::Superseded => Refusal::transient(
            "superseded",
            "another checkout of this order took over, try again",
        ),
    }
}
