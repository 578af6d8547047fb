//! The public API through the gateway: one shared HTTP client with a big pool.

use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::load::Outcome;

/// A checkout under load can wait for its turn at the coordinator and the databases.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// More than the largest number of clients, so that no request waits for a connection.
const POOL_PER_HOST: usize = 512;

/// A client of the public API; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Gateway {
    base: String,
    http: reqwest::Client,
}

impl Gateway {
    pub fn new(base: String) -> anyhow::Result<Self> {
        Self::with_limits(base, POOL_PER_HOST, REQUEST_TIMEOUT)
    }

    /// A client of its own, e.g. one that holds thousands of connections (`pool`) and waits
    /// `timeout` for each answer.
    pub fn with_limits(base: String, pool: usize, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_max_idle_per_host(pool)
            .build()
            .context("building the HTTP client")?;
        Ok(Gateway { base, http })
    }

    /// One request under load: the status class, body read (so the connection is reused).
    pub async fn call(&self, method: Method, path: &str) -> Outcome {
        let url = format!("{}{path}", self.base);
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            }
        };
        let response = match self.http.request(method, url).send().await {
            Ok(response) => response,
            Err(error) => return failed(error),
        };
        let status = response.status();
        if let Err(error) = response.bytes().await {
            return failed(error);
        }
        if status.is_success() {
            Outcome::Ok
        } else {
            Outcome::Rejected(status.as_u16())
        }
    }

    /// A set-up POST that must succeed; returns the body.
    pub async fn post_ok(&self, path: &str) -> anyhow::Result<String> {
        self.must_succeed(Method::POST, path).await
    }

    /// A set-up POST whose JSON reply is wanted.
    pub async fn post_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.post_ok(path).await?;
        serde_json::from_str(&body).with_context(|| format!("POST {path}: reply {body:?}"))
    }

    /// A GET that must succeed with JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.must_succeed(Method::GET, path).await?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: reply {body:?}"))
    }

    async fn must_succeed(&self, method: Method, path: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the reply"))?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body)
    }
}
