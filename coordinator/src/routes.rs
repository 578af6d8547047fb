//! The coordinator's internal HTTP API.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tracing::Instrument;
use twopc::{
    deadline::SETTLE,
    wire::{routes, Outcome, Refusal, TransactionRequest},
};
use uuid::Uuid;

use crate::{error::Error, log, phase_two, protocol, App};

pub fn router(app: App) -> Router {
    Router::new()
        .route(routes::TRANSACTIONS, post(run_transaction))
        .route(routes::TRANSACTION, get(transaction_status))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(
            service_kit::telemetry::track_http,
        ))
        .with_state(app)
}

async fn run_transaction(
    State(app): State<App>,
    Json(request): Json<TransactionRequest>,
) -> Result<Json<Outcome>, Error> {
    let span = tracing::info_span!("transaction", txid = %request.txid);
    // The protocol runs in a task of its own: a caller that goes away (its timeout, a crash)
    // drops this handler, and a transaction cancelled halfway would keep its branches
    // prepared and its txid in flight, out of recovery's reach, for good.
    let tasks = app.tasks.clone();
    let run = async move { protocol::run(&app, request).await }.instrument(span);
    let outcome = tasks
        .run(run)
        .await
        .ok_or_else(|| Error::Task("the transaction's task panicked".into()))??;
    Ok(Json(outcome))
}

/// The outcome of a transaction whose reply the caller lost, from any coordinator:
///
/// 1. an outcome this process reached lately (with its real reason);
/// 2. `pending` while this process runs it;
/// 3. the shared log: a commit decision is `committed` once its branches are finished (this
///    finishes them first, up to a moment) and `committing` while one is not, so `committed`
///    means a read sees it; an abort record is aborted;
/// 4. no record: `unknown` until the caller's deadline for the transaction (`?deadline=`) has
///    settled, or at once if the caller asks to fence (`?fence=true`); then the transaction
///    is fenced off and whichever outcome the log holds is final.
async fn transaction_status(
    State(app): State<App>,
    Path(txid): Path<Uuid>,
    Query(query): Query<StatusParams>,
) -> Result<Json<Outcome>, Error> {
    if let Some(outcome) = app.inflight.outcome(txid) {
        return Ok(Json(outcome));
    }
    if app.inflight.contains(txid) {
        return Ok(Json(Outcome::Pending));
    }
    let decision = match app.log.lookup(txid).await? {
        Some(decision) => decision,
        None => {
            let settled = query.deadline.is_some_and(|d| d.plus(SETTLE).has_passed());
            if !(settled || query.fence) {
                return Ok(Json(Outcome::Unknown));
            }
            match app.log.fence(txid).await? {
                log::Fate::Abort => return Ok(Json(not_decided())),
                // Fencing found a commit decided meanwhile.
                log::Fate::Commit => match app.log.lookup(txid).await? {
                    Some(decision) => decision,
                    None => return Ok(Json(Outcome::Committing)),
                },
            }
        }
    };
    if decision.fate == log::Fate::Abort {
        return Ok(Json(not_decided()));
    }
    // Committed only once a read would see it: the branches are finished first, up to a moment.
    let visible =
        decision.finished || phase_two::finish_decided(&app, &decision, FINISH_WAIT).await;
    Ok(Json(if visible {
        Outcome::Committed
    } else {
        Outcome::Committing
    }))
}

fn not_decided() -> Outcome {
    Outcome::Aborted {
        participant: "coordinator".to_owned(),
        refusal: Refusal::transient(
            "not_decided",
            "the checkout was interrupted before it committed, try again",
        ),
    }
}

/// [`twopc::wire::StatusQuery`], whose deadline older callers did not send.
#[derive(Debug, serde::Deserialize)]
struct StatusParams {
    deadline: Option<twopc::Deadline>,
    #[serde(default)]
    fence: bool,
}

/// How long a status answer waits for a decided transaction's branches to commit; inside the
/// order service's bound on one status question (2 s).
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_millis(1_200);

async fn health(State(app): State<App>) -> Response {
    match sqlx::query("select 1").execute(app.log.pool()).await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(error) => {
            tracing::warn!(%error, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "decision log unreachable").into_response()
        }
    }
}

async fn metrics(State(app): State<App>) -> Response {
    service_kit::telemetry::render(&app.metrics)
}
