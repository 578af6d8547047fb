//! A real stock service on an ephemeral port, over a fresh database, and a client for it:
//! `participant_server::testing` for the stock participant.

#![allow(dead_code)]

use participant_server::testing::Books;
use participant_stock::Stock;
use serde_json::json;

pub type TestServer = participant_server::testing::TestServer<Stock>;

/// Stock is kept in `items.stock`; a member takes a quantity of an item.
pub const BOOKS: Books = Books {
    table: "items",
    column: "stock",
    batch_init: |n, stock| format!("/stock/batch_init/{n}/{stock}/1"),
    add: |id, amount| format!("/stock/add/{id}/{amount}"),
    take: |id, quantity| json!({ "items": [{ "item_id": id, "quantity": quantity }] }),
    insert: "insert into items (id, stock, price) values ($1, $2, 1)",
};

pub async fn spawn_app() -> TestServer {
    participant_server::testing::spawn_app::<Stock>(BOOKS).await
}
