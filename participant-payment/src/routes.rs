//! The public `/payment` API, under its full paths (the gateway strips no prefix).

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use service_kit::{parse_amount, parse_count, parse_id};
use sqlx::PgPool;

use crate::{
    db,
    error::{Error, Result},
};

pub fn router() -> Router<PgPool> {
    Router::new()
        .route("/payment/create_user", post(create_user))
        .route("/payment/batch_init/{n}/{starting_money}", post(batch_init))
        .route("/payment/find_user/{user_id}", get(find_user))
        .route("/payment/add_funds/{user_id}/{amount}", post(add_funds))
        .route("/payment/pay/{user_id}/{amount}", post(pay))
}

async fn create_user(State(pool): State<PgPool>) -> Result<Json<Value>> {
    let id = uuid::Uuid::new_v4().to_string();
    db::create_user(&pool, &id).await?;
    Ok(Json(json!({ "user_id": id })))
}

async fn batch_init(
    State(pool): State<PgPool>,
    Path((n, money)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let n = parse_count("n", &n)?;
    let money = parse_amount("starting_money", &money, 0)?;
    db::batch_init(&pool, n, money).await?;
    Ok(Json(
        json!({ "msg": format!("{n} users with credit {money}") }),
    ))
}

async fn find_user(State(pool): State<PgPool>, Path(id): Path<String>) -> Result<Json<db::User>> {
    let id = parse_id("user_id", &id)?;
    let user = service_kit::db::read(|| db::find_user(&pool, &id))
        .await?
        .ok_or(Error::UnknownUser(id))?;
    Ok(Json(user))
}

async fn add_funds(
    State(pool): State<PgPool>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("user_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    db::add_funds(&pool, &id, amount).await?;
    Ok("ok")
}

async fn pay(
    State(pool): State<PgPool>,
    Path((id, amount)): Path<(String, String)>,
) -> Result<&'static str> {
    let id = parse_id("user_id", &id)?;
    let amount = parse_amount("amount", &amount, 1)?;
    let mut conn = pool.acquire().await?;
    db::charge(&mut conn, &id, amount)
        .await?
        .map_err(|refusal| Error::Refused(refusal.message))?;
    Ok("ok")
}
