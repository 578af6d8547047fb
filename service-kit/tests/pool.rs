//! The services' pools against a real server: a connection left idle past
//! `TEST_AFTER_IDLE` is tested before it is handed out again.

use std::time::{Duration, Instant};

use service_kit::{
    db::{pool_options, TEST_AFTER_IDLE},
    testing::fresh_database,
};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn a_connection_whose_session_ended_while_idle_is_replaced_before_use() {
    let db = fresh_database().await;
    let pool = pool_options(1, Duration::from_secs(5))
        .connect_lazy(&db.url)
        .unwrap();
    let first: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The connection goes back to the pool in a task of sqlx's own, after its release test.
    let by = Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < 1 {
        assert!(
            Instant::now() < by,
            "the connection never went back to the pool"
        );
        tokio::task::yield_now().await;
    }
    // End its session, as a database restart or failover would.
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1, 5000)")
        .bind(first)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended, "backend {first} did not end");
    // Idle past the window: the pool tests the connection and opens another.
    tokio::time::sleep(TEST_AFTER_IDLE).await;
    let second: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("a statement after the session ended");
    assert_ne!(first, second);
}
