//! The services' pools against a real server: a connection left idle past
//! `TEST_AFTER_IDLE` is tested before it is handed out again, and so is every one released
//! before a connection was seen broken.

use std::time::{Duration, Instant};

use service_kit::{
    db::{pool_options, read, TEST_AFTER_IDLE},
    testing::fresh_database,
};
use sqlx::{Connection, PgConnection, PgPool};

/// Waits until `pool` holds `idle` idle connections: a connection goes back to the pool in a
/// task of sqlx's own, after its release test.
async fn wait_idle(pool: &PgPool, idle: usize) {
    let by = Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < idle {
        assert!(
            Instant::now() < by,
            "{idle} connections never went back to the pool"
        );
        tokio::task::yield_now().await;
    }
}

/// Ends the sessions of `pids`, as a database restart or failover would.
async fn terminate(url: &str, pids: &[i32]) {
    let mut admin = PgConnection::connect(url).await.unwrap();
    for pid in pids {
        let ended: bool = sqlx::query_scalar("select pg_terminate_backend($1, 5000)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(ended, "backend {pid} did not end");
    }
}

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn a_connection_whose_session_ended_while_idle_is_replaced_before_use() {
    let db = fresh_database().await;
    let pool = pool_options(1, Duration::from_secs(5))
        .connect_lazy(&db.url)
        .unwrap();
    let first = backend_pid(&pool).await.unwrap();
    wait_idle(&pool, 1).await;
    terminate(&db.url, &[first]).await;
    // Idle past the window: the pool tests the connection and opens another.
    tokio::time::sleep(TEST_AFTER_IDLE).await;
    let second = backend_pid(&pool)
        .await
        .expect("a statement after the session ended");
    assert_ne!(first, second);
}

/// Every pooled session ends at once, and a read follows at once, inside the idle window: the
/// read meets a broken connection, and its second run, like every statement after it, gets a
/// connection tested or opened since.
#[tokio::test]
async fn after_a_broken_connection_none_released_before_it_is_used_untested() {
    const POOLED: usize = 3;
    let db = fresh_database().await;
    let pool = pool_options(POOLED as u32, Duration::from_secs(5))
        .connect_lazy(&db.url)
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..POOLED {
        held.push(pool.acquire().await.unwrap());
    }
    let mut ended = Vec::new();
    for connection in &mut held {
        let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        ended.push(pid);
    }
    drop(held);
    wait_idle(&pool, POOLED).await;
    terminate(&db.url, &ended).await;

    let pid = read(|| backend_pid(&pool))
        .await
        .expect("a read after every pooled session ended");
    assert!(!ended.contains(&pid), "read on ended session {pid}");
    for _ in 0..POOLED {
        let pid = backend_pid(&pool)
            .await
            .expect("a statement after a broken connection was seen");
        assert!(!ended.contains(&pid), "statement on ended session {pid}");
    }
}
