//! HTTP routes: the public `/orders` API and the internal ones.

use axum::{
    extract::{Path, State as AxumState},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use service_kit::{parse_amount, parse_count, parse_id};

use crate::{checkout, db, error::Error, prepare, stock, State};

pub fn router(state: State) -> Router {
    Router::new()
        .route("/orders/create/{user_id}", post(create))
        .route(
            "/orders/batch_init/{n}/{n_items}/{n_users}/{item_price}",
            post(batch_init),
        )
        .route("/orders/find/{order_id}", get(find))
        .route(
            "/orders/addItem/{order_id}/{item_id}/{quantity}",
            post(add_item),
        )
        .route("/orders/checkout/{order_id}", post(checkout_order))
        .route(
            twopc::wire::routes::PREPARE,
            post(participant_server::prepare::<prepare::OrderBranch>),
        )
        .route("/health", get(service_kit::http::health))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(
            service_kit::telemetry::track_http,
        ))
        .with_state(state)
}

#[derive(Serialize)]
struct Created {
    order_id: String,
}

#[derive(Serialize)]
struct Message {
    msg: String,
}

/// The public shape of an order.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: String,
    pub paid: bool,
    pub items: Vec<(String, i64)>,
    pub user_id: String,
    pub total_cost: i64,
}

async fn create(
    AxumState(state): AxumState<State>,
    Path(user_id): Path<String>,
) -> Result<Json<Created>, Error> {
    let user_id = parse_id("user_id", &user_id)?;
    let order_id = uuid::Uuid::new_v4().to_string();
    db::create_order(&state.pool, &order_id, &user_id).await?;
    Ok(Json(Created { order_id }))
}

async fn batch_init(
    AxumState(state): AxumState<State>,
    Path((n, n_items, n_users, item_price)): Path<(String, String, String, String)>,
) -> Result<Json<Message>, Error> {
    let n = parse_count("n", &n)?;
    let n_items = parse_count("n_items", &n_items)?;
    let n_users = parse_count("n_users", &n_users)?;
    let item_price = parse_amount("item_price", &item_price, 0)?;
    let total = item_price.checked_mul(2).ok_or(Error::Overflow)?;
    db::batch_init(&state.pool, n, n_items, n_users, total).await?;
    Ok(Json(Message {
        msg: format!("batch init for orders successful: {n} orders"),
    }))
}

async fn find(
    AxumState(state): AxumState<State>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, Error> {
    let order_id = parse_id("order_id", &order_id)?;
    let order = service_kit::db::read(|| db::find_order(&state.pool, &order_id))
        .await?
        .ok_or(Error::UnknownOrder(order_id))?;
    Ok(Json(OrderView {
        order_id: order.id,
        paid: order.paid,
        items: order.items,
        user_id: order.user_id,
        total_cost: order.total_cost,
    }))
}

async fn add_item(
    AxumState(state): AxumState<State>,
    Path((order_id, item_id, quantity)): Path<(String, String, String)>,
) -> Result<Response, Error> {
    let order_id = parse_id("order_id", &order_id)?;
    let item_id = parse_id("item_id", &item_id)?;
    let quantity = parse_amount("quantity", &quantity, 1)?;
    let price = item_price(&state, &item_id).await?;
    let cost = quantity.checked_mul(price).ok_or(Error::Overflow)?;
    let mut conn = state.pool.acquire().await?;
    match db::add_item(&mut conn, &order_id, &item_id, quantity, cost).await {
        Ok(Ok(total)) => Ok((StatusCode::OK, format!("item added, total {total}")).into_response()),
        Ok(Err(db::Unchanged::Unknown)) => Err(Error::UnknownOrder(order_id)),
        Ok(Err(db::Unchanged::Paid | db::Unchanged::Changed | db::Unchanged::Superseded)) => {
            Err(Error::AlreadyPaid(order_id))
        }
        Err(error) if service_kit::db::has_code(&error, service_kit::db::NUMERIC_OUT_OF_RANGE) => {
            Err(Error::Overflow)
        }
        Err(error) => Err(error.into()),
    }
}

/// Bound on asking the stock service for a price.
const PRICE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn item_price(state: &State, item_id: &str) -> Result<i64, Error> {
    match stock::find(state, item_id, PRICE_TIMEOUT).await? {
        Some(item) => Ok(item.price),
        None => Err(Error::UnknownItem(item_id.to_owned())),
    }
}

async fn checkout_order(
    AxumState(state): AxumState<State>,
    Path(order_id): Path<String>,
) -> Result<Response, Error> {
    let order_id = parse_id("order_id", &order_id)?;
    let message = checkout::checkout(&state, &order_id).await?;
    Ok((StatusCode::OK, message).into_response())
}

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    service_kit::telemetry::render(&state.metrics)
}
