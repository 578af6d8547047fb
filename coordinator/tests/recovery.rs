//! Recovery against real PostgreSQL databases: in-doubt states are made on purpose with the
//! participant-side protocol code, then a round plans and applies its actions.

use std::time::Duration;

use coordinator::{
    config::ParticipantSpec,
    inflight::InFlight,
    participants::Participants,
    recovery::{Action, Recovery},
    MIGRATIONS,
};
use sqlx::{Executor, PgPool};
use twopc::{branch::Branch, Gid};
use uuid::Uuid;

struct World {
    log: PgPool,
    participants: Participants,
    pools: Vec<PgPool>,
}

const NAMES: [&str; 2] = ["alpha", "beta"];

async fn world() -> World {
    let log = PgPool::connect(&service_kit::testing::fresh_database().await)
        .await
        .unwrap();
    MIGRATIONS.run(&log).await.unwrap();
    let mut specs = Vec::new();
    let mut pools = Vec::new();
    for name in NAMES {
        let url = service_kit::testing::fresh_database().await;
        let pool = PgPool::connect(&url).await.unwrap();
        pool.execute(
            "create table twopc_markers (gid text primary key, created_at timestamptz not null default now());
             create table rows (id text primary key);",
        )
        .await
        .unwrap();
        pools.push(pool);
        specs.push(ParticipantSpec {
            name: name.to_owned(),
            base_url: "http://127.0.0.1:9".to_owned(),
            database_url: url,
        });
    }
    let participants = Participants::connect(&specs, 4).unwrap();
    World {
        log,
        participants,
        pools,
    }
}

impl World {
    fn recovery<'a>(&'a self, in_flight: Option<&'a InFlight>, grace: Duration) -> Recovery<'a> {
        Recovery {
            coordinator: Some("c1"),
            log: &self.log,
            participants: &self.participants,
            in_flight,
            grace,
        }
    }

    /// Prepares a branch that inserts `row` into participant `index`.
    async fn prepare(&self, index: usize, coordinator: &str, txid: Uuid, row: &str) -> Gid {
        let gid = Gid::new(coordinator, txid, NAMES[index]).unwrap();
        let mut branch = Branch::begin(&self.pools[index], &gid, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        sqlx::query("insert into rows (id) values ($1)")
            .bind(row)
            .execute(branch.tx())
            .await
            .unwrap();
        branch.prepare().await.unwrap();
        gid
    }

    async fn log_commit(&self, coordinator: &str, txid: Uuid) {
        sqlx::query("insert into decisions (txid, coordinator, participants) values ($1, $2, $3)")
            .bind(txid)
            .bind(coordinator)
            .bind(NAMES.join(","))
            .execute(&self.log)
            .await
            .unwrap();
    }

    async fn prepared(&self, index: usize) -> Vec<String> {
        sqlx::query_scalar(
            "select gid from pg_prepared_xacts where database = current_database() order by gid",
        )
        .fetch_all(&self.pools[index])
        .await
        .unwrap()
    }

    async fn has_row(&self, index: usize, row: &str) -> bool {
        sqlx::query_scalar("select exists (select 1 from rows where id = $1)")
            .bind(row)
            .fetch_one(&self.pools[index])
            .await
            .unwrap()
    }

    async fn finished(&self, txid: Uuid) -> bool {
        sqlx::query_scalar("select finished_at is not null from decisions where txid = $1")
            .bind(txid)
            .fetch_one(&self.log)
            .await
            .unwrap()
    }

    /// Leaves no prepared transaction behind on the shared test server.
    async fn clean_up(&self) {
        for (index, pool) in self.pools.iter().enumerate() {
            for gid in self.prepared(index).await {
                pool.execute(format!("rollback prepared '{gid}'").as_str())
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test]
async fn a_prepared_branch_without_a_decision_is_rolled_back() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert_eq!(plan.items.len(), 1);
    assert_eq!(plan.items[0].action, Action::Rollback);
    let applied = recovery.apply(&plan).await;

    assert_eq!(applied.rolled_back, 1);
    assert!(world.prepared(0).await.is_empty());
    assert!(!world.has_row(0, "a").await);
}

#[tokio::test]
async fn a_logged_commit_is_committed_on_every_participant_and_finished() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;
    world.prepare(1, "c1", txid, "b").await;
    world.log_commit("c1", txid).await;

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert!(plan.items.iter().all(|item| item.action == Action::Commit));
    assert_eq!(plan.items.len(), 2);
    let applied = recovery.apply(&plan).await;

    assert_eq!(applied.committed, 2);
    assert!(world.prepared(0).await.is_empty() && world.prepared(1).await.is_empty());
    assert!(world.has_row(0, "a").await && world.has_row(1, "b").await);
    assert!(world.finished(txid).await);
}

#[tokio::test]
async fn a_logged_commit_already_applied_only_finishes_its_record() {
    let world = world().await;
    let txid = Uuid::new_v4();
    let a = world.prepare(0, "c1", txid, "a").await;
    let b = world.prepare(1, "c1", txid, "b").await;
    world.log_commit("c1", txid).await;
    twopc::finish::commit_prepared(&world.pools[0], &a)
        .await
        .unwrap();
    twopc::finish::commit_prepared(&world.pools[1], &b)
        .await
        .unwrap();

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert!(plan.items.is_empty());
    assert_eq!(plan.finishable, vec![txid]);
    recovery.apply(&plan).await;
    assert!(world.finished(txid).await);
}

#[tokio::test]
async fn a_logged_commit_whose_branch_is_gone_without_marker_is_reported_as_a_hazard() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;
    // beta's branch never prepared (as after an asynchronous failover lost it).
    world.log_commit("c1", txid).await;

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    let actions: Vec<(String, Action)> = plan
        .items
        .iter()
        .map(|i| (i.participant.clone(), i.action))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("alpha".into(), Action::Commit),
            ("beta".into(), Action::Hazard)
        ]
    );
    let applied = recovery.apply(&plan).await;

    assert_eq!(applied.hazards, 1);
    let hazards: i64 = sqlx::query_scalar("select count(*) from hazards where txid = $1")
        .bind(txid)
        .fetch_one(&world.log)
        .await
        .unwrap();
    assert_eq!(hazards, 1);
    assert!(
        !world.finished(txid).await,
        "a hazard keeps its decision open"
    );
    assert!(
        world.has_row(0, "a").await,
        "the reachable branch is still committed"
    );
}

#[tokio::test]
async fn transactions_in_flight_and_young_branches_are_left_alone() {
    let world = world().await;
    let running = Uuid::new_v4();
    let young = Uuid::new_v4();
    world.prepare(0, "c1", running, "a").await;
    world.prepare(1, "c1", young, "b").await;
    let in_flight = InFlight::default();
    in_flight.start(running);

    let recovery = world.recovery(Some(&in_flight), Duration::from_secs(3600));
    let plan = recovery.plan().await.unwrap();
    let actions: Vec<Action> = plan.items.iter().map(|i| i.action).collect();
    assert!(actions.contains(&Action::InFlight) && actions.contains(&Action::TooYoung));
    recovery.apply(&plan).await;

    assert_eq!(world.prepared(0).await.len(), 1);
    assert_eq!(world.prepared(1).await.len(), 1);
    world.clean_up().await;
}

#[tokio::test]
async fn another_coordinators_branches_are_never_touched() {
    let world = world().await;
    world.prepare(0, "c2", Uuid::new_v4(), "a").await;

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert!(plan.items.is_empty());
    recovery.apply(&plan).await;

    assert_eq!(world.prepared(0).await.len(), 1);
    world.clean_up().await;
}
