//! Connecting to a service's own PostgreSQL database.

use std::time::Duration;

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool,
};

/// How long start-up waits for a database that is still coming up (the launcher starts the
/// databases and the services at the same time, and restarts either after a crash).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// Opens a pool on `url`, waiting up to [`CONNECT_DEADLINE`] for the server to accept
/// connections, and applies `migrations`.
///
/// Pools test connections before handing them out, so a connection broken by a database
/// restart or failover is replaced instead of failing the next request.
pub async fn connect(
    url: &str,
    max_connections: u32,
    migrations: Option<&Migrator>,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
        .connect_lazy_with(options);
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    loop {
        match pool.acquire().await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "database not ready yet, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
    if let Some(migrator) = migrations {
        migrator.run(&pool).await?;
    }
    Ok(pool)
}

/// True when `error` is PostgreSQL's SQLSTATE `code`.
pub fn has_code(error: &sqlx::Error, code: &str) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|c| c == code)
}

/// SQLSTATE for a value out of range (an `i64` overflow inside SQL arithmetic).
pub const NUMERIC_OUT_OF_RANGE: &str = "22003";
