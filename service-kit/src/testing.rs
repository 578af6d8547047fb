//! Test support: a fresh, empty database per test on a real PostgreSQL server.
//!
//! `scripts/test` starts a PostgreSQL 15 server (configured for prepared transactions) and
//! exports its admin URL as `WDM_TEST_DATABASE_URL`; each test creates its own database there,
//! so tests run in parallel without seeing each other's rows, and drops it when it ends (passed
//! or failed), so that a long run does not fill the server with databases and prepared
//! transactions.

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

/// A database of one test's own on the test server; dropped with the value.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, for the services and pools under test.
    pub url: String,
    name: String,
}

/// Creates an empty database, dropped when the returned value is.
pub async fn fresh_database() -> TestDatabase {
    let admin = admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .expect("test server reachable");
    sqlx::raw_sql(&format!("create database {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    TestDatabase {
        url: replace_database(&admin, &name),
        name,
    }
}

impl Drop for TestDatabase {
    /// Rolls back what the test left prepared there (a prepared transaction holds a slot of
    /// the shared server's and keeps its database from being dropped), then drops the
    /// database, ending the sessions still in it. Best effort: a failure here must not hide
    /// the test's own. It runs on a thread and runtime of its own, as `Drop` cannot await
    /// and the test's runtime may be a single thread busy dropping this.
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                rollback_all_prepared(&url).await;
                drop_database(&name).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn rollback_all_prepared(url: &str) {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return;
    };
    let gids: Vec<String> =
        sqlx::query_scalar("select gid from pg_prepared_xacts where database = current_database()")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for gid in gids {
        // Gids come from the server itself; the escaping covers any that a test made up.
        let gid = gid.replace('\'', "''");
        let _ = sqlx::raw_sql(&format!("rollback prepared '{gid}'"))
            .execute(&mut conn)
            .await;
    }
}

async fn drop_database(name: &str) {
    let Ok(admin) = std::env::var(ADMIN_URL_VAR) else {
        return;
    };
    let Ok(mut conn) = PgConnection::connect(&admin).await else {
        return;
    };
    // `name` is ours (`t_` and hex digits); `with (force)` ends the sessions still in it.
    let _ = sqlx::raw_sql(&format!("drop database if exists {name} with (force)"))
        .execute(&mut conn)
        .await;
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
