//! Recovery against real PostgreSQL databases: in-doubt states are made on purpose with the
//! participant-side protocol code, then a round plans and applies its actions.

mod world;

use std::time::Duration;

use coordinator::{
    inflight::InFlight,
    log::{DecisionLog, Fate},
    recovery::Action,
};
use twopc::{branch::Branch, Deadline};
use uuid::Uuid;
use world::world;

#[tokio::test]
async fn a_prepared_branch_without_a_decision_is_rolled_back() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c1", txid, "a").await;

    let recovery = world.recovery(None, Duration::ZERO);
    world.assert_one_rollback(&recovery).await;
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
async fn transactions_in_flight_and_live_peers_young_branches_are_left_alone() {
    let world = world().await;
    let running = Uuid::new_v4();
    let young = Uuid::new_v4();
    world.prepare(0, "c1", running, "a").await;
    world.prepare(1, "c2", young, "b").await;
    let in_flight = InFlight::default();
    in_flight.start(running);
    let _c2_alive = world.hold_identity("c2").await;

    let recovery = world.coordinator_round("c1", &in_flight, Duration::from_secs(3600));
    let plan = recovery.plan().await.unwrap();
    let actions: Vec<Action> = plan.items.iter().map(|i| i.action).collect();
    assert!(actions.contains(&Action::InFlight) && actions.contains(&Action::TooYoung));
    recovery.apply(&plan).await;

    assert_eq!(world.prepared(0).await.len(), 1);
    assert_eq!(world.prepared(1).await.len(), 1);
}

/// A peer that no process holds the identity of is not deciding anything: its undecided
/// branch, however young, is fenced off and rolled back in the first round.
#[tokio::test]
async fn a_dead_peers_young_branch_is_fenced_off_and_rolled_back_at_once() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c2", txid, "a").await;

    let in_flight = InFlight::default();
    let recovery = world.coordinator_round("c1", &in_flight, Duration::from_secs(3600));
    assert!(world.assert_one_rollback(&recovery).await.fence);
}

#[tokio::test]
async fn a_peers_old_branch_without_a_decision_is_fenced_off_and_rolled_back() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c2", txid, "a").await;

    let in_flight = InFlight::default();
    let recovery = world.coordinator_round("c1", &in_flight, Duration::ZERO);
    let rolled_back = world.assert_one_rollback(&recovery).await;
    assert!(
        rolled_back.fence,
        "not c1's own: fenced before the rollback"
    );
    assert!(!world.has_row(0, "a").await);
    let outcome: String = sqlx::query_scalar("select outcome from decisions where txid = $1")
        .bind(txid)
        .fetch_one(&world.log)
        .await
        .unwrap();
    assert_eq!(outcome, "abort", "c2 can never log a commit for it now");
}

#[tokio::test]
async fn a_fence_that_finds_a_commit_decision_commits_the_branch_instead() {
    let world = world().await;
    let txid = Uuid::new_v4();
    world.prepare(0, "c2", txid, "a").await;

    let in_flight = InFlight::default();
    let recovery = world.coordinator_round("c1", &in_flight, Duration::ZERO);
    let plan = recovery.plan().await.unwrap();
    assert_eq!(plan.items[0].action, Action::Rollback);
    // c2 logs its commit after the plan was made, before the fence.
    world.log_commit("c2", txid).await;
    let applied = recovery.apply(&plan).await;
    assert_eq!(applied.committed, 1, "{applied:?}");

    assert!(world.prepared(0).await.is_empty());
    assert!(world.has_row(0, "a").await, "the logged commit is honoured");
}

#[tokio::test]
async fn a_commit_decision_lands_only_before_its_deadline_and_before_any_fence() {
    let world = world().await;
    let tasks = service_kit::tasks::Tasks::new();
    let log = DecisionLog::open(&world.log_url, "c1", world.log.clone(), &tasks)
        .await
        .unwrap();
    let names = vec!["alpha".to_owned()];

    let in_time = Uuid::new_v4();
    let soon = Deadline::after(Duration::from_secs(30));
    assert!(log.record_commit(in_time, &names, soon).await);
    assert_eq!(log.fence(in_time).await.unwrap(), Fate::Commit);

    let late = Uuid::new_v4();
    assert!(
        !log.record_commit(late, &names, Deadline::from_millis(1))
            .await
    );

    let fenced = Uuid::new_v4();
    assert_eq!(log.fence(fenced).await.unwrap(), Fate::Abort);
    assert!(!log.record_commit(fenced, &names, soon).await);

    let fates: Vec<(Uuid, String)> =
        sqlx::query_as("select txid, outcome from decisions order by outcome")
            .fetch_all(&world.log)
            .await
            .unwrap();
    assert_eq!(
        fates,
        vec![(fenced, "abort".to_owned()), (in_time, "commit".to_owned())]
    );
}

#[tokio::test]
async fn a_branch_whose_deadline_passes_before_prepare_is_refused_where_it_lands() {
    let world = world().await;
    let gid = twopc::Gid::new("c1", Uuid::new_v4(), "alpha").unwrap();
    let deadline = Deadline::after(Duration::from_millis(300));
    let mut branch = Branch::begin(&world.pools[0], &gid, deadline, false)
        .await
        .unwrap()
        .unwrap();
    sqlx::query("insert into rows (id) values ('late')")
        .execute(branch.tx())
        .await
        .unwrap();
    // The participant was slow (or stopped) past the deadline before it got to PREPARE.
    while !deadline.has_passed() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = branch.prepare().await.unwrap_err();
    assert!(
        twopc::branch::transient_refusal(&error).is_some(),
        "a late prepare is a transient no vote: {error}"
    );
    assert!(world.prepared(0).await.is_empty());
    assert!(!world.has_row(0, "late").await);
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
