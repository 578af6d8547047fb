//! Test support for participant crates: a real participant service on an ephemeral port,
//! over a fresh database, and a client for it. Enabled by the `testing` feature.

use std::{marker::PhantomData, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::{Config, Participant, Server};

/// A running participant service `P` and a client for it; dropping it stops the service.
pub struct TestServer<P> {
    pub base: String,
    pub client: reqwest::Client,
    /// A pool of the test's own on the service's database, for asserting its state and for
    /// finishing prepared branches the way the coordinator does.
    pub pool: PgPool,
    database_url: String,
    stop: Option<oneshot::Sender<()>>,
    participant: PhantomData<fn() -> P>,
}

pub async fn spawn_app<P: Participant>() -> TestServer<P> {
    service_kit::telemetry::init_logs();
    let database_url = service_kit::testing::fresh_database().await;
    let server = Server::<P>::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.clone(),
        db_max_connections: 16,
    })
    .await
    .unwrap_or_else(|error| panic!("{} service starts: {error:?}", P::NAME));
    let base = format!("http://127.0.0.1:{}", server.port());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    TestServer {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        pool: PgPool::connect(&database_url).await.unwrap(),
        database_url,
        stop: Some(stop),
        participant: PhantomData,
    }
}

impl<P> TestServer<P> {
    pub async fn post(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// POSTs `body` as JSON and returns the status and the reply as JSON (or as a string when
    /// it is not JSON).
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends again the prepare of `gid` (prepared already) with `work`: marked as a repeat it
    /// finds the branch prepared and votes yes; unmarked it does not look, and still applies
    /// nothing twice: the work waits for the rows its prepared twin holds until the deadline
    /// and votes a transient no. Either way the branch stays prepared once.
    pub async fn assert_resends_apply_nothing_twice(&self, gid: &twopc::Gid, work: Value) {
        use std::time::Duration;
        let mut body = serde_json::json!({
            "gid": gid.to_string(),
            "deadline": twopc::Deadline::after(Duration::from_secs(1)),
            "work": work,
            "repeat": true,
        });
        let (status, vote) = self.post_json(twopc::wire::routes::PREPARE, &body).await;
        assert_eq!(
            (status, vote),
            (StatusCode::OK, serde_json::json!({ "vote": "yes" }))
        );
        body["repeat"] = Value::Bool(false);
        body["deadline"] = serde_json::json!(twopc::Deadline::after(Duration::from_millis(200)));
        let (status, vote) = self.post_json(twopc::wire::routes::PREPARE, &body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (&vote["vote"], &vote["business"]),
            (&Value::from("no"), &Value::from(false))
        );
        assert_eq!(self.prepared_gids().await, vec![gid.to_string()]);
    }

    /// Gids of the branches prepared in this service's database.
    pub async fn prepared_gids(&self) -> Vec<String> {
        sqlx::query_scalar(
            "select gid from pg_prepared_xacts where database = current_database() order by gid",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

impl<P> Drop for TestServer<P> {
    /// Stops the service and rolls back whatever a failed test left prepared, so the shared
    /// server's prepared-transaction slots do not fill up.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let url = self.database_url.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(rollback_all_prepared(&url));
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
        // Gids come from the server itself, and the tests only prepare valid ones.
        let _ = sqlx::raw_sql(&format!("rollback prepared '{gid}'"))
            .execute(&mut conn)
            .await;
    }
}

/// A valid gid for participant `P`, unique per call.
pub fn new_gid<P: Participant>() -> twopc::Gid {
    twopc::Gid::new("test", uuid::Uuid::new_v4(), P::NAME).unwrap()
}
