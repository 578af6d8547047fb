//! The public `/stock` API, under its full paths (the gateway strips no prefix).

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use service_kit::{parse_amount, parse_count, parse_id};
use sqlx::PgPool;

use crate::{db, error::Result};

pub fn router() -> Router<PgPool> {
    Router::new()
        .route("/stock/item/create/{price}", post(create_item))
        .route(
            "/stock/batch_init/{n}/{starting_stock}/{item_price}",
            post(batch_init),
        )
        .route("/stock/find/{item_id}", get(find))
        .route("/stock/add/{item_id}/{amount}", post(add))
        .route("/stock/subtract/{item_id}/{amount}", post(subtract))
}

async fn create_item(State(pool): State<PgPool>, Path(price): Path<String>) -> Result<Json<Value>> {
    let price = parse_amount("price", &price, 0)?;
    let id = uuid::Uuid::new_v4().to_string();
    db::create_item(&pool, &id, price).await?;
    Ok(Json(json!({ "item_id": id })))
}

async fn batch_init(
    State(pool): State<PgPool>,
    Path((n, stock, price)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let n = parse_count("n", &n)?;
    let stock = parse_amount("starting_stock", &stock, 0)?;
    let price = parse_amount("item_price", &price, 0)?;
    db::batch_init(&pool, n, stock, price).await?;
    Ok(Json(
        json!({ "msg": format!("{n} items with stock {stock} and price {price}") }),
    ))
}

async fn find(State(pool): State<PgPool>, Path(id): Path<String>) -> Result<Json<db::Item>> {
    let id = parse_id("item_id", &id)?;
    let item = service_kit::db::read(|| db::find_item(&pool, &id))
        .await?
        .ok_or(crate::error::Error::UnknownItem(id))?;
    Ok(Json(item))
}

async fn add(
    State(pool): State<PgPool>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("item_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    db::add_stock(&pool, &id, amount).await?;
    Ok("ok")
}

async fn subtract(
    State(pool): State<PgPool>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("item_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    let mut conn = pool.acquire().await?;
    db::subtract_stock(&mut conn, &id, amount).await?;
    Ok("ok")
}
