//! The one HTTP client of the services, for the tests (which panic on a transport error:
//! that is a failure of the test) and the benchmark (which reports errors and counts them).

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A client of one service (or of the gateway) at `base`; cheap to clone (the connection
/// pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://host:port`.
    pub base: String,
    /// The client itself, for a request the helpers do not cover.
    pub http: reqwest::Client,
}

impl Client {
    /// A client that keeps up to `pool` idle connections per host (0: a fresh connection per
    /// request) and waits `timeout` for each answer, connecting included (a test's system
    /// under overload may keep a connection waiting, and that wait is part of its answer).
    pub fn with_limits(base: impl Into<String>, pool: usize, timeout: Duration) -> Self {
        Self::build(base, reqwest::Client::builder(), pool, timeout)
    }

    /// [`Client::with_limits`] that gives up on a connection not open within `connect`: a
    /// measurement counts such a request as failed rather than wait for it.
    pub fn with_connect_limit(
        base: impl Into<String>,
        pool: usize,
        timeout: Duration,
        connect: Duration,
    ) -> Self {
        let builder = reqwest::Client::builder().connect_timeout(connect);
        Self::build(base, builder, pool, timeout)
    }

    fn build(
        base: impl Into<String>,
        builder: reqwest::ClientBuilder,
        pool: usize,
        timeout: Duration,
    ) -> Self {
        let http = builder
            .timeout(timeout)
            .pool_max_idle_per_host(pool)
            .build()
            .expect("an HTTP client with these limits");
        Self {
            base: base.into(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs `path`; the status and body. A transport error fails the test.
    pub async fn post(&self, path: &str) -> (StatusCode, String) {
        self.expect_reply(Method::POST, path, None).await
    }

    /// GETs `path`; the status and body. A transport error fails the test.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        self.expect_reply(Method::GET, path, None).await
    }

    /// POSTs `body` as JSON; the status and the reply as JSON (or as a string when it is not
    /// JSON). A transport error fails the test.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (status, text) = self.expect_reply(Method::POST, path, Some(body)).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The status and body of a request that reached the service; a body cut off reads as
    /// empty, as the status is what a test asserts.
    async fn expect_reply(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, String) {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// A request that must succeed; its body.
    pub async fn must_succeed(&self, method: Method, path: &str) -> anyhow::Result<String> {
        Ok(self.must_succeed_typed(method, path).await?.1)
    }

    /// A request that must succeed with a JSON reply (by its content type too); the reply
    /// read as `T`.
    pub async fn must_succeed_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let (content_type, body) = self.must_succeed_typed(method.clone(), path).await?;
        anyhow::ensure!(
            content_type.starts_with("application/json"),
            "{method} {path}: content type {content_type:?}"
        );
        serde_json::from_str(&body).with_context(|| format!("{method} {path}: reply {body:?}"))
    }

    /// The content type and body of a request that must succeed.
    async fn must_succeed_typed(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(String, String)> {
        let response = self
            .http
            .request(method.clone(), self.url(path))
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .text()
            .await
            .with_context(|| format!("{method} {path}: reading the reply"))?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok((content_type, body))
    }

    /// One request under load, its body read (so that the connection is reused, and a reply
    /// cut off counts as the error it is): the status, or the transport error.
    pub async fn status_of(&self, method: Method, path: &str) -> reqwest::Result<StatusCode> {
        let response = self.http.request(method, self.url(path)).send().await?;
        let status = response.status();
        response.bytes().await?;
        Ok(status)
    }
}
