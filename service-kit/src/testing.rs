//! Test support: a fresh, empty database per test on a real PostgreSQL server.
//!
//! `scripts/test` starts a PostgreSQL 15 server (configured for prepared transactions) and
//! exports its admin URL as `WDM_TEST_DATABASE_URL`; each test creates its own database there,
//! so tests run in parallel without seeing each other's rows.

use sqlx::{Connection, PgConnection};

/// The environment variable holding the admin URL of the test server.
pub const ADMIN_URL_VAR: &str = "WDM_TEST_DATABASE_URL";

/// The admin URL of the test server.
///
/// # Panics
/// When the variable is not set: these tests need a real server, which `scripts/test` starts.
pub fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{ADMIN_URL_VAR} is not set: run the tests with scripts/test, which starts PostgreSQL"
        )
    })
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("test server reachable");
    sqlx::raw_sql(&format!("create database {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    replace_database(&admin, &name)
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
