//! The service's one error type and its mapping to HTTP.
//!
//! A database error is ours (500), every other variant is about the request (400): see
//! `service_kit::http::error_reply`.

use axum::response::{IntoResponse, Response};
use service_kit::{http::error_reply, ParamError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("unknown item {0}")]
    UnknownItem(String),
    #[error("item {item_id} has {stock} left, {wanted} wanted")]
    InsufficientStock {
        item_id: String,
        stock: i64,
        wanted: i64,
    },
    #[error("adding {amount} to item {item_id} would overflow its stock")]
    Overflow { item_id: String, amount: i64 },
    #[error("invalid stock work: {0}")]
    Work(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // Only the database is a failure of ours; every other variant is about the request.
        let database = match &self {
            Error::Database(source) => Some(source),
            _ => None,
        };
        error_reply(&self, database)
    }
}
