//! A real payment service on an ephemeral port, over a fresh database, and a client for it:
//! `participant_server::testing` for the payment participant.

#![allow(dead_code)]

use participant_payment::Payment;
use participant_server::testing::Books;
use serde_json::json;

pub type TestServer = participant_server::testing::TestServer<Payment>;

/// Credit is kept in `users.credit`; a member charges one user an amount.
pub const BOOKS: Books = Books {
    table: "users",
    column: "credit",
    batch_init: |n, credit| format!("/payment/batch_init/{n}/{credit}"),
    add: |id, amount| format!("/payment/add_funds/{id}/{amount}"),
    take: |id, amount| json!({ "user_id": id, "amount": amount }),
    insert: "insert into users (id, credit) values ($1, $2)",
};

pub async fn spawn_app() -> TestServer {
    participant_server::testing::spawn_app::<Payment>(BOOKS).await
}
