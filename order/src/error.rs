//! The order service's error type and its HTTP form.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use service_kit::ParamError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("order {0:?} not found")]
    UnknownOrder(String),
    #[error("item {0:?} not found")]
    UnknownItem(String),
    #[error("order {0:?} is already paid")]
    AlreadyPaid(String),
    #[error("the order's total would exceed the largest integer")]
    Overflow,
    /// A checkout refused by a participant for a business reason (out of stock, credit, ...).
    #[error("{0}")]
    Rejected(String),
    /// A checkout aborted for a transient reason; nothing was changed, the client may retry.
    #[error("{0}")]
    Aborted(String),
    /// The stock service could not be asked for a price.
    #[error("stock service unavailable")]
    StockUnavailable(#[source] reqwest::Error),
    /// The checkout waited its whole queue wait for a place among those in flight; nothing
    /// was done.
    #[error("too many checkouts at once; nothing was done, try again")]
    Overloaded,
    /// The coordinator did not tell the outcome in time; the order's `paid` flag will.
    #[error("the checkout's outcome is not known yet; GET /orders/find shows it")]
    OutcomeUnknown,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Internal(String),
}

/// Seconds a client refused for load is asked to wait: about what the queue drains in.
const RETRY_AFTER: u16 = 1;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Param(_)
            | Error::UnknownOrder(_)
            | Error::UnknownItem(_)
            | Error::AlreadyPaid(_)
            | Error::Overflow
            | Error::Rejected(_) => StatusCode::BAD_REQUEST,
            // 4xx on purpose: the checkout changed nothing, and clients count 5xx as maybe-done.
            Error::Aborted(_) => StatusCode::CONFLICT,
            Error::Overloaded => {
                let mut response = service_kit::http::client_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    self.to_string(),
                );
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, RETRY_AFTER.into());
                return response;
            }
            Error::StockUnavailable(_) | Error::OutcomeUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(source) => return service_kit::http::database_error(&self, source),
            Error::Internal(error) => return service_kit::http::internal_error(error),
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "service unavailable");
        }
        service_kit::http::client_error(status, self.to_string())
    }
}
