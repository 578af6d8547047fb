//! The coordinator's internal HTTP API.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tracing::Instrument;
use twopc::wire::{routes, Outcome, Refusal, TransactionRequest};
use uuid::Uuid;

use crate::{error::Error, protocol, App};

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
    let run = tokio::spawn(async move { protocol::run(&app, request).await }.instrument(span));
    let outcome = run
        .await
        .map_err(|error| Error::Task(error.to_string()))??;
    Ok(Json(outcome))
}

/// The outcome of a transaction whose reply the caller lost. "Aborted" for a transaction this
/// process neither runs nor logged is final: the identity lock guarantees no earlier
/// incarnation can still log it, and the txid is barred from starting later.
async fn transaction_status(
    State(app): State<App>,
    Path(txid): Path<Uuid>,
) -> Result<Json<Outcome>, Error> {
    if app.inflight.contains(txid) {
        return Ok(Json(Outcome::Pending));
    }
    if app.log.lookup(txid).await?.is_some() {
        return Ok(Json(Outcome::Committed));
    }
    if !app.inflight.settle_unknown(txid) {
        return Ok(Json(Outcome::Pending));
    }
    // It may have been logged between the lookup and settling.
    if app.log.lookup(txid).await?.is_some() {
        return Ok(Json(Outcome::Committed));
    }
    Ok(Json(Outcome::Aborted {
        participant: "coordinator".to_owned(),
        refusal: Refusal::transient(
            "not_decided",
            "the checkout was interrupted before it committed, try again",
        ),
    }))
}

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
