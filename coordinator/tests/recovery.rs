//! Recovery against real PostgreSQL databases: in-doubt states are made on purpose with the
//! participant-side protocol code, then a round plans and applies its actions.

mod world;

use std::time::Duration;

use coordinator::{inflight::InFlight, recovery::Action};
use uuid::Uuid;
use world::world;

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

#[tokio::test]
async fn a_prepared_branch_of_a_finished_decision_is_still_committed() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;
    world.log_commit("c1", txid).await;
    sqlx::query("update decisions set finished_at = now() where txid = $1")
        .bind(txid)
        .execute(&world.log)
        .await
        .unwrap();

    let recovery = world.recovery(None, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert_eq!(plan.items.len(), 1);
    assert_eq!(plan.items[0].log, coordinator::recovery::LogState::Finished);
    assert_eq!(plan.items[0].action, Action::Commit);
    recovery.apply(&plan).await;

    assert!(world.prepared(0).await.is_empty());
    assert!(world.has_row(0, "a").await);
}
