//! Test support for participant crates: a real participant service on an ephemeral port,
//! over a fresh database, a client for it, and the scenarios both participants' tests run
//! (phase one and its refusals, bad input, lost updates) over their own [`Books`]. Enabled
//! by the `testing` feature.

use std::{marker::PhantomData, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::{Config, Participant, Server};

mod cases;
pub use cases::BadInput;

/// Where a participant keeps what its branches take, and how its tests fill it and take
/// from it: what the shared scenarios need to know of a participant, and nothing else.
#[derive(Clone, Copy)]
pub struct Books {
    /// The table of the rows a branch takes from (`items`, `users`).
    pub table: &'static str,
    /// Their column that a branch lowers (`stock`, `credit`).
    pub column: &'static str,
    /// The public route creating or overwriting rows "0".."n-1" holding `amount` each.
    pub batch_init: fn(n: u32, amount: i64) -> String,
    /// The public route adding `amount` to row `id`.
    pub add: fn(id: &str, amount: i64) -> String,
    /// A member's work taking `amount` from row `id`.
    pub take: fn(id: &str, amount: i64) -> Value,
    /// SQL inserting a row of id `$1` holding `$2`, whatever its id.
    pub insert: &'static str,
}

/// A running participant service `P` and a client for it; dropping it stops the service.
pub struct TestServer<P> {
    /// The client of the service (`post`, `get`, `post_json`, … through `Deref`).
    pub client: test_support::Client,
    /// A pool of the test's own on the service's database, for asserting its state and for
    /// finishing prepared branches the way the coordinator does.
    pub pool: PgPool,
    pub books: Books,
    stop: Option<oneshot::Sender<()>>,
    participant: PhantomData<fn() -> P>,
    /// Last, so that it is dropped (its prepared transactions rolled back, then the database
    /// dropped) after the service was told to stop.
    pub database: service_kit::testing::TestDatabase,
}

pub async fn spawn_app<P: Participant>(books: Books) -> TestServer<P> {
    service_kit::telemetry::init_logs();
    let database = service_kit::testing::fresh_database().await;
    let server = Server::<P>::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database.url.clone(),
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
        client: test_support::Client::with_limits(base, usize::MAX, Duration::from_secs(30)),
        pool: PgPool::connect(&database.url).await.unwrap(),
        books,
        stop: Some(stop),
        participant: PhantomData,
        database,
    }
}

impl<P> std::ops::Deref for TestServer<P> {
    type Target = test_support::Client;

    fn deref(&self) -> &test_support::Client {
        &self.client
    }
}

impl<P> TestServer<P> {
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

fn yes() -> Value {
    serde_json::json!({ "vote": "yes" })
}

impl<P> Drop for TestServer<P> {
    /// Stops the service; then the database goes with its prepared transactions (see
    /// [`service_kit::testing::TestDatabase`]), so a failed test leaves nothing on the shared
    /// server.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A valid gid for participant `P`, unique per call.
pub fn new_gid<P: Participant>() -> twopc::Gid {
    twopc::Gid::new("test", uuid::Uuid::new_v4(), P::NAME).unwrap()
}
