//! The HTTP routes: the public `/payment` API under its full path, and the internal ones
//! (`/health`, `/metrics`, the 2PC prepare) that the gateway never forwards.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use service_kit::{parse_amount, parse_count, parse_id};

use crate::{
    db,
    error::{Error, Result},
    prepare, AppState,
};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/payment/create_user", post(create_user))
        .route("/payment/batch_init/{n}/{starting_money}", post(batch_init))
        .route("/payment/find_user/{user_id}", get(find_user))
        .route("/payment/add_funds/{user_id}/{amount}", post(add_funds))
        .route("/payment/pay/{user_id}/{amount}", post(pay))
        .route(twopc::wire::routes::PREPARE, post(prepare::prepare))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn(service_kit::telemetry::track_http))
        .with_state(state)
}

async fn create_user(State(state): State<AppState>) -> Result<Json<Value>> {
    let id = uuid::Uuid::new_v4().to_string();
    db::create_user(&state.pool, &id).await?;
    Ok(Json(json!({ "user_id": id })))
}

async fn batch_init(
    State(state): State<AppState>,
    Path((n, money)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let n = parse_count("n", &n)?;
    let money = parse_amount("starting_money", &money, 0)?;
    db::batch_init(&state.pool, n, money).await?;
    Ok(Json(
        json!({ "msg": format!("{n} users with credit {money}") }),
    ))
}

async fn find_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<db::User>> {
    let id = parse_id("user_id", &id)?;
    let user = db::find_user(&state.pool, &id)
        .await?
        .ok_or(Error::UnknownUser(id))?;
    Ok(Json(user))
}

async fn add_funds(
    State(state): State<AppState>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("user_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    db::add_funds(&state.pool, &id, amount).await?;
    Ok("ok")
}

async fn pay(
    State(state): State<AppState>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("user_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    let mut conn = state.pool.acquire().await?;
    db::pay(&mut conn, &id, amount).await?;
    Ok("ok")
}

async fn health(State(state): State<AppState>) -> Response {
    match db::ping(&state.pool).await {
        Ok(_) => "ok".into_response(),
        Err(error) => {
            tracing::warn!(%error, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    service_kit::telemetry::render(&state.metrics)
}
