//! A real PostgreSQL 15 instance under the supervisor: created, killed, restarted.

use std::time::{Duration, Instant};

use launcher::postgres::PostgresInstance;
use launcher::{ports, ScratchDir, Supervisor};
use sqlx::{Connection, PgConnection, Row};

const READY: Duration = Duration::from_secs(60);

/// A fresh instance in a scratch directory, running under a supervisor and ready.
async fn start_instance() -> (ScratchDir, PostgresInstance, Supervisor) {
    let dir = ScratchDir::new("postgres").unwrap();
    let instance =
        PostgresInstance::new(dir.path().join("pg"), ports::free_port().unwrap()).unwrap();
    let init = instance.clone();
    tokio::task::spawn_blocking(move || init.init())
        .await
        .unwrap()
        .unwrap();
    let supervisor = Supervisor::new(dir.path().join("logs")).unwrap();
    supervisor.spawn("pg", instance.command_spec()).unwrap();
    instance.wait_ready(READY).await.unwrap();
    (dir, instance, supervisor)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_postgres_is_restarted_and_keeps_committed_and_prepared_transactions() {
    let (_dir, instance, supervisor) = start_instance().await;
    let first = supervisor.pid("pg").unwrap().unwrap();
    instance.create_database("probe").await.unwrap();
    instance.create_database("probe").await.unwrap();

    let url = instance.url("probe");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "create table t (v int); insert into t values (1);
         begin; insert into t values (2); prepare transaction 'launcher-test';",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);

    assert_eq!(supervisor.kill("pg").unwrap(), Some(first));
    let deadline = Instant::now() + READY;
    while supervisor.restarts("pg").unwrap() == 0 {
        assert!(Instant::now() < deadline, "postgres was not restarted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(supervisor.pid("pg").unwrap(), Some(first));
    instance.wait_ready(READY).await.unwrap();

    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("commit prepared 'launcher-test'")
        .execute(&mut conn)
        .await
        .unwrap();
    let rows = sqlx::query("select v from t order by v")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let values: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(values, [1, 2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_with_the_settings_two_phase_commit_needs() {
    let (_dir, instance, _supervisor) = start_instance().await;

    let mut conn = PgConnection::connect(&instance.url("postgres"))
        .await
        .unwrap();
    for (setting, expected) in [
        ("max_prepared_transactions", "256"),
        ("max_connections", "300"),
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("shared_buffers", "128MB"),
        ("listen_addresses", "127.0.0.1"),
    ] {
        let value: String = sqlx::query_scalar(&format!("show {setting}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }
    let user: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, "postgres");
}
