//! The service's one error type and its mapping to HTTP.
//!
//! The mapping has the same shape as `participant-payment`'s (client errors 400, database 500),
//! but over this service's own variants, so each crate keeps its own.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use service_kit::{
    http::{client_error, internal_error},
    ParamError,
};

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
        let status = match &self {
            Error::Param(_)
            | Error::UnknownItem(_)
            | Error::InsufficientStock { .. }
            | Error::Overflow { .. }
            | Error::Work(_) => StatusCode::BAD_REQUEST,
            Error::Database(_) => return internal_error(&self),
        };
        client_error(status, self.to_string())
    }
}
