//! The in-doubt states the recovery tests build on purpose: a fresh decision log and two fresh
//! participant databases on the shared test server, branches prepared with the participant-side
//! protocol code.

#![allow(dead_code)]

use std::time::Duration;

use coordinator::{
    config::ParticipantSpec,
    inflight::InFlight,
    participants::Participants,
    recovery::{Action, Item, Own, Recovery},
    MIGRATIONS,
};
use service_kit::testing::{fresh_database, TestDatabase};
use sqlx::{migrate::Migrator, Executor, PgPool};
use twopc::{branch::Branch, Gid};
use uuid::Uuid;

pub struct World {
    pub log: PgPool,
    pub participants: Participants,
    pub pools: Vec<PgPool>,
    /// The participants as the coordinator's environment lists them.
    pub specs: Vec<ParticipantSpec>,
    pub log_url: String,
    /// The log's database and the participants'. Dropped with the world, pass or fail: each
    /// first rolls back what the test left prepared there (see
    /// [`service_kit::testing::TestDatabase`]), so a failed test leaves the shared server's
    /// prepared-transaction slots free.
    databases: Vec<TestDatabase>,
}

/// The participant databases' schema: a real participant's migrations (`twopc_markers` as the
/// services have it), and a table for the branches' rows.
static PARTICIPANT_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/stock");

pub const NAMES: [&str; 2] = ["alpha", "beta"];

pub async fn world() -> World {
    let log_database = fresh_database().await;
    let log_url = log_database.url.clone();
    let log = PgPool::connect(&log_url).await.unwrap();
    MIGRATIONS.run(&log).await.unwrap();
    let mut databases = vec![log_database];
    let mut specs = Vec::new();
    let mut pools = Vec::new();
    for name in NAMES {
        let database = fresh_database().await;
        let url = database.url.clone();
        databases.push(database);
        let pool = PgPool::connect(&url).await.unwrap();
        PARTICIPANT_MIGRATIONS.run(&pool).await.unwrap();
        pool.execute("create table rows (id text primary key)")
            .await
            .unwrap();
        pools.push(pool);
        specs.push(ParticipantSpec {
            name: name.to_owned(),
            base_urls: vec!["http://127.0.0.1:9".parse().unwrap()],
            database_url: url,
        });
    }
    let participants = Participants::connect(&specs, 4).unwrap();
    World {
        log,
        participants,
        pools,
        specs,
        log_url,
        databases,
    }
}

impl World {
    /// Recovery of coordinator `c1`'s branches: by the live `c1` itself when `in_flight` is
    /// given, else as the CLI sees them.
    pub fn recovery<'a>(
        &'a self,
        in_flight: Option<&'a InFlight>,
        grace: Duration,
    ) -> Recovery<'a> {
        Recovery {
            scope: Some("c1"),
            own: in_flight.map(|in_flight| Own {
                id: "c1",
                in_flight,
            }),
            log: &self.log,
            participants: &self.participants,
            grace,
        }
    }

    /// Recovery as the live coordinator `own` runs it: every coordinator's branches.
    pub fn coordinator_round<'a>(
        &'a self,
        own: &'a str,
        in_flight: &'a InFlight,
        grace: Duration,
    ) -> Recovery<'a> {
        Recovery {
            scope: None,
            own: Some(Own { id: own, in_flight }),
            log: &self.log,
            participants: &self.participants,
            grace,
        }
    }

    /// A session that holds `coordinator`'s identity lock on the log, as its live process's
    /// decision writer does: while it is open, that coordinator counts as alive.
    pub async fn hold_identity(&self, coordinator: &str) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut session = sqlx::PgConnection::connect(&self.log_url).await.unwrap();
        sqlx::query("select pg_advisory_lock(hashtext('wdm-coordinator'), hashtext($1))")
            .bind(coordinator)
            .execute(&mut session)
            .await
            .unwrap();
        session
    }

    /// Prepares a branch that inserts `row` into participant `index`.
    pub async fn prepare(&self, index: usize, coordinator: &str, txid: Uuid, row: &str) -> Gid {
        let gid = Gid::new(coordinator, txid, NAMES[index]).unwrap();
        let deadline = twopc::Deadline::after(Duration::from_secs(5));
        let mut branch = Branch::begin(&self.pools[index], &gid, deadline, false)
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

    pub async fn log_commit(&self, coordinator: &str, txid: Uuid) {
        sqlx::query("insert into decisions (txid, coordinator, participants) values ($1, $2, $3)")
            .bind(txid)
            .bind(coordinator)
            .bind(NAMES.join(","))
            .execute(&self.log)
            .await
            .unwrap();
    }

    pub async fn prepared(&self, index: usize) -> Vec<String> {
        sqlx::query_scalar(
            "select gid from pg_prepared_xacts where database = current_database() order by gid",
        )
        .fetch_all(&self.pools[index])
        .await
        .unwrap()
    }

    pub async fn has_row(&self, index: usize, row: &str) -> bool {
        sqlx::query_scalar("select exists (select 1 from rows where id = $1)")
            .bind(row)
            .fetch_one(&self.pools[index])
            .await
            .unwrap()
    }

    pub async fn finished(&self, txid: Uuid) -> bool {
        sqlx::query_scalar("select finished_at is not null from decisions where txid = $1")
            .bind(txid)
            .fetch_one(&self.log)
            .await
            .unwrap()
    }

    /// Asserts that a round of `recovery` plans one rollback, of participant 0's branch, and
    /// carries it out; returns that plan's one item.
    pub async fn assert_one_rollback(&self, recovery: &Recovery<'_>) -> Item {
        let plan = recovery.plan().await.unwrap();
        assert_eq!(plan.items.len(), 1, "{plan:?}");
        assert_eq!(plan.items[0].action, Action::Rollback);
        let applied = recovery.apply(&plan).await;
        assert_eq!(applied.rolled_back, 1, "{applied:?}");
        assert!(self.prepared(0).await.is_empty());
        plan.items[0].clone()
    }
}
