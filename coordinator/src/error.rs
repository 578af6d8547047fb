//! The coordinator's error type and its HTTP form.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::protocol::RequestError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("decision log: {0}")]
    Database(#[from] sqlx::Error),
    #[error("transaction task failed: {0}")]
    Task(String),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Request(error) => {
                service_kit::http::client_error(StatusCode::BAD_REQUEST, error.to_string())
            }
            Error::Database(source) => service_kit::http::database_error(&source, &source),
            Error::Task(error) => service_kit::http::internal_error(&error),
        }
    }
}
