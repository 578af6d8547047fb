//! The HTTP routes: the public `/stock` API under its full path, and the internal ones
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

use crate::{db, error::Result, prepare, AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/stock/item/create/{price}", post(create_item))
        .route(
            "/stock/batch_init/{n}/{starting_stock}/{item_price}",
            post(batch_init),
        )
        .route("/stock/find/{item_id}", get(find))
        .route("/stock/add/{item_id}/{amount}", post(add))
        .route("/stock/subtract/{item_id}/{amount}", post(subtract))
        .route(twopc::wire::routes::PREPARE, post(prepare::prepare))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn(service_kit::telemetry::track_http))
        .with_state(state)
}

async fn create_item(
    State(state): State<AppState>,
    Path(price): Path<String>,
) -> Result<Json<Value>> {
    let price = parse_amount("price", &price, 0)?;
    let id = uuid::Uuid::new_v4().to_string();
    db::create_item(&state.pool, &id, price).await?;
    Ok(Json(json!({ "item_id": id })))
}

async fn batch_init(
    State(state): State<AppState>,
    Path((n, stock, price)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let n = parse_count("n", &n)?;
    let stock = parse_amount("starting_stock", &stock, 0)?;
    let price = parse_amount("item_price", &price, 0)?;
    db::batch_init(&state.pool, n, stock, price).await?;
    Ok(Json(
        json!({ "msg": format!("{n} items with stock {stock} and price {price}") }),
    ))
}

async fn find(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<db::Item>> {
    let id = parse_id("item_id", &id)?;
    let item = db::find_item(&state.pool, &id)
        .await?
        .ok_or(crate::error::Error::UnknownItem(id))?;
    Ok(Json(item))
}

async fn add(
    State(state): State<AppState>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("item_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    db::add_stock(&state.pool, &id, amount).await?;
    Ok("ok")
}

async fn subtract(
    State(state): State<AppState>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("item_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    let mut conn = state.pool.acquire().await?;
    db::subtract_stock(&mut conn, &id, amount).await?;
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
