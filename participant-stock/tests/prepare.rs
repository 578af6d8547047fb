//! Phase one of the stock branch (`POST /_2pc/prepare`), finished the way the coordinator
//! finishes it: straight on the database with `twopc::finish`. What the payment branch does
//! alike is `participant_server::testing`'s; what is the stock branch's own is here.

mod support;

participant_server::shared_branch_tests!(support::spawn_app);

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{spawn_app, TestServer};
use twopc::finish::{commit_prepared, CommitResult};

/// The work of one checkout taking `(item, quantity)` of each of `items`.
fn items(items: &[(&str, i64)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, quantity)| json!({ "item_id": id, "quantity": quantity }))
        .collect();
    json!({ "items": items })
}

#[tokio::test]
async fn a_yes_vote_keeps_the_branch_prepared_and_its_rows_locked_until_commit() {
    spawn_app()
        .await
        .assert_yes_vote_holds_its_rows_until_commit(
            items(&[("1", 3), ("0", 2)]),
            &[("0", 2), ("1", 3)],
        )
        .await;
}

#[tokio::test]
async fn out_of_stock_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    app.init(2, 5).await;
    let vote = app
        .assert_business_no(items(&[("0", 5), ("1", 6)]), "out_of_stock")
        .await;
    assert_eq!(vote["message"], "item 1 has 5 left, 6 wanted");
}

#[tokio::test]
async fn an_unknown_item_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    app.init(1, 5).await;
    app.assert_business_no(items(&[("0", 1), ("nope", 1)]), "unknown_item")
        .await;
}

#[tokio::test]
async fn malformed_work_is_refused_with_400_and_prepares_nothing() {
    spawn_app()
        .await
        .assert_malformed_works_are_refused_with_400(vec![
            json!({ "items": "0" }),
            items(&[("0", 0)]),
            items(&[("0", -1)]),
            json!({ "items": [{ "item_id": "0", "quantity": 1.5 }] }),
            items(&[("", 1)]),
            items(&[(&"x".repeat(1025), 1)]),
            items(&[("0", 1), ("0", 1)]),
            json!({ "items": [{ "item_id": "0", "quantity": 1, "price": 3 }] }),
        ])
        .await;
}

#[tokio::test]
async fn stock_taken_while_a_branch_waited_for_its_lock_is_refused_with_what_is_left() {
    let app = spawn_app().await;
    app.init(2, 1).await;
    app.ok("/stock/add/0/9").await;
    let first = app.new_gid();
    let (_, vote) = app.prepare(&first, items(&[("1", 1)])).await;
    assert_eq!(vote, json!({ "vote": "yes" }));

    // The second sees the committed stock of 1 and queues on the row the first holds.
    let second = app.new_gid();
    let work = items(&[("0", 2), ("1", 1)]);
    let ((status, vote), committed) = tokio::join!(app.prepare(&second, work), async {
        wait_until_waiting_for_a_lock(&app).await;
        commit_prepared(&app.pool, &first).await.unwrap()
    });
    assert_eq!(committed, CommitResult::Committed);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "out_of_stock");
    assert_eq!(vote["business"], true);
    assert_eq!(vote["message"], "item 1 has 0 left, 1 wanted");
    assert!(app.prepared_gids().await.is_empty());
    assert_eq!(
        app.balance("0").await,
        10,
        "nothing taken from the item that had enough"
    );
    assert_eq!(app.balance("1").await, 0);
}

/// A committed stock short of the quantity is refused at once, even with the item held by a
/// prepared branch: the first look takes no lock, so it waits for none.
#[tokio::test]
async fn a_short_item_held_by_a_prepared_branch_is_refused_at_once() {
    let app = spawn_app().await;
    app.init(2, 1).await;
    let holder = app.new_gid();
    let (_, vote) = app.prepare(&holder, items(&[("1", 1)])).await;
    assert_eq!(vote, json!({ "vote": "yes" }));

    let (status, vote) = app
        .prepare(&app.new_gid(), items(&[("0", 1), ("1", 2)]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "out_of_stock");
    assert_eq!(vote["business"], true);
    assert_eq!(vote["message"], "item 1 has 1 left, 2 wanted");
    assert_eq!(app.prepared_gids().await, vec![holder.to_string()]);
    assert_eq!(app.balance("0").await, 1, "nothing taken from item 0");

    assert_eq!(
        commit_prepared(&app.pool, &holder).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(app.balance("1").await, 0);
}

/// Waits until some session of the test database waits for a row lock.
async fn wait_until_waiting_for_a_lock(app: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session waits for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_batch_takes_every_members_stock_in_one_prepared_branch() {
    let app = spawn_app().await;
    app.init(3, 10).await;
    let gid = app.new_gid();
    let members = json!([items(&[("2", 3), ("0", 1)]), items(&[("0", 9)])]);
    let (status, vote) = app.prepare(&gid, members).await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));
    assert_eq!(app.prepared_gids().await, vec![gid.to_string()]);
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(app.balance("0").await, 0);
    assert_eq!(app.balance("1").await, 10);
    assert_eq!(app.balance("2").await, 7);
}

#[tokio::test]
async fn a_batch_with_one_member_short_is_refused_whole_naming_that_member() {
    let app = spawn_app().await;
    app.init(2, 10).await;
    // Each member alone fits; the second does not fit after the first.
    let members = json!([
        items(&[("1", 1), ("0", 6)]),
        items(&[("0", 6)]),
        items(&[("1", 1)]),
    ]);
    let vote = app.assert_business_no(members, "out_of_stock").await;
    assert_eq!(vote["member"], 1, "{vote}");

    let (status, reply) = app.prepare(&app.new_gid(), json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = app
        .prepare(&app.new_gid(), json!([items(&[("0", 0)])]))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
}
