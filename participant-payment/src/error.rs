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
    /// A charge the database refused (unknown user, not enough credit), with its reason.
    #[error("{0}")]
    Refused(String),
    #[error("invalid payment work: {0}")]
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
