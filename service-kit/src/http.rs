//! Serving and calling HTTP.

use std::{future::Future, time::Duration};

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use tokio::net::TcpListener;

use crate::tasks::{Tasks, STOP_DEADLINE};

/// Connect timeout of every outgoing call: peers are on the same host or network.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's one outgoing HTTP client; `request_timeout` bounds every call.
pub fn client(request_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(request_timeout)
        // Well below the idle keep-alive of HAProxy (30 s) and of the services, so a request is
        // never sent on a connection the other side is closing.
        .pool_idle_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .expect("a client with only timeouts configured always builds")
}

/// Serves `router` on `listener` until `shutdown` resolves and the requests in progress have
/// been answered, then stops the service's background `tasks` and waits for them (at most
/// [`STOP_DEADLINE`]): when this returns, nothing of the service is still running.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    tasks: &Tasks,
) -> std::io::Result<()> {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    tasks.stop(STOP_DEADLINE).await;
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// `GET /health` of a service behind the gateway: liveness, deliberately not a database check.
/// Every instance of a service shares one database, so failing the check while the database
/// is away (a failover) or busy (every pooled connection queued on a hot row's lock) would mark
/// every instance down at once and turn requests that wait and then answer cleanly into the
/// gateway's own 503s. A service only starts serving once it has connected and migrated.
pub async fn health() -> &'static str {
    "ok"
}

/// A business failure: 4xx with a short plain-text reason.
pub fn client_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// The answer to a service's error: one caused by the database (`database`, its source) is a
/// failure of ours, a logged 500 ([`database_error`]); anything else is about the request and
/// answered 400 with the error's own message.
pub fn error_reply(error: &dyn std::fmt::Display, database: Option<&sqlx::Error>) -> Response {
    match database {
        Some(source) => database_error(error, source),
        None => client_error(StatusCode::BAD_REQUEST, error.to_string()),
    }
}

/// A failure of ours caused by the database error `source`: noted, in case it says a
/// connection broke ([`crate::db::note_broken`]), and answered as an [`internal_error`].
pub fn database_error(error: &dyn std::fmt::Display, source: &sqlx::Error) -> Response {
    crate::db::note_broken(source);
    internal_error(error)
}

/// A failure of ours: logged with its cause, answered as a bare "internal error".
pub fn internal_error(cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(%cause, "internal error");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}
