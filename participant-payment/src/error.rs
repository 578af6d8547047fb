//! The service's one error type and its mapping to HTTP.
//!
//! The mapping has the same shape as `participant-stock`'s (client errors 400, database 500),
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
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("user {user_id} has credit {credit}, {wanted} wanted")]
    InsufficientCredit {
        user_id: String,
        credit: i64,
        wanted: i64,
    },
    #[error("adding {amount} to the credit of user {user_id} would overflow it")]
    Overflow { user_id: String, amount: i64 },
    #[error("invalid payment work: {0}")]
    Work(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Param(_)
            | Error::UnknownUser(_)
            | Error::InsufficientCredit { .. }
            | Error::Overflow { .. }
            | Error::Work(_) => StatusCode::BAD_REQUEST,
            Error::Database(_) => return internal_error(&self),
        };
        client_error(status, self.to_string())
    }
}
