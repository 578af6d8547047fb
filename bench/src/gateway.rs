//! The public API through the gateway: `test_support::Client` (the one client of the tests
//! and the bench) with the bench's limits, and what a request under load counts as.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
pub use test_support::Client as Gateway;

use crate::load::Outcome;

/// A checkout under load can wait for its turn at the coordinator and the databases.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// More than the largest number of clients, so that no request waits for a connection.
const POOL_PER_HOST: usize = 512;

/// The bench's shared client of the gateway at `base`.
pub fn new(base: String) -> Gateway {
    with_limits(base, POOL_PER_HOST, REQUEST_TIMEOUT)
}

/// A client of its own, e.g. one that holds thousands of connections (`pool`) and waits
/// `timeout` for each answer.
pub fn with_limits(base: String, pool: usize, timeout: Duration) -> Gateway {
    Gateway::with_connect_limit(base, pool, timeout, CONNECT_TIMEOUT)
}

/// What the sections ask of the gateway.
pub(crate) trait Requests {
    /// One request under load: the status class, body read (so the connection is reused).
    async fn call(&self, method: Method, path: &str) -> Outcome;

    /// A set-up POST that must succeed; returns the body.
    async fn post_ok(&self, path: &str) -> anyhow::Result<String>;

    /// A GET that must succeed with JSON.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T>;
}

impl Requests for Gateway {
    async fn call(&self, method: Method, path: &str) -> Outcome {
        match self.status_of(method, path).await {
            Ok(status) if status.is_success() => Outcome::Ok,
            Ok(status) => Outcome::Rejected(status.as_u16()),
            Err(error) if error.is_timeout() => Outcome::TimedOut,
            Err(_) => Outcome::Failed,
        }
    }

    async fn post_ok(&self, path: &str) -> anyhow::Result<String> {
        self.must_succeed(Method::POST, path).await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.must_succeed_json(Method::GET, path).await
    }
}
