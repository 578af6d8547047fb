//! Phase one of the stock branch (`POST /_2pc/prepare`), finished the way the coordinator
//! finishes it: straight on the database with `twopc::finish`.

mod support;

use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{new_gid, spawn_app, TestServer};
use twopc::{
    finish::{commit_prepared, marker_exists, rollback_prepared, CommitResult, RollbackResult},
    wire::routes::PREPARE,
    Gid,
};

async fn stock_of(app: &TestServer, id: &str) -> i64 {
    sqlx::query_scalar("select stock from items where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn prepare(app: &TestServer, gid: &Gid, items: Value) -> (StatusCode, Value) {
    let body = json!({ "gid": gid.to_string(), "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)), "work": { "items": items } });
    app.post_json(PREPARE, &body).await
}

/// True when another transaction holds a row lock on the item.
async fn is_locked(app: &TestServer, id: &str) -> bool {
    let mut tx = app.pool.begin().await.unwrap();
    let result = sqlx::query("select 1 from items where id = $1 for update nowait")
        .bind(id)
        .execute(&mut *tx)
        .await;
    match result {
        Ok(_) => false,
        Err(error) if twopc::sqlstate::has_code(&error, "55P03") => true,
        Err(error) => panic!("{error}"),
    }
}

#[tokio::test]
async fn a_yes_vote_keeps_the_branch_prepared_and_its_rows_locked_until_commit() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/3/10/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(
        &app,
        &gid,
        json!([{ "item_id": "1", "quantity": 3 }, { "item_id": "0", "quantity": 2 }]),
    )
    .await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));

    assert_eq!(app.prepared_gids().await, vec![gid.to_string()]);
    assert_eq!(stock_of(&app, "0").await, 10);
    assert_eq!(stock_of(&app, "1").await, 10);
    assert!(is_locked(&app, "0").await);
    assert!(is_locked(&app, "1").await);
    assert!(!is_locked(&app, "2").await);
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());

    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(stock_of(&app, "0").await, 8);
    assert_eq!(stock_of(&app, "1").await, 7);
    assert_eq!(stock_of(&app, "2").await, 10);
    assert!(marker_exists(&app.pool, &gid).await.unwrap());
    assert!(app.prepared_gids().await.is_empty());
    assert!(!is_locked(&app, "0").await);
}

#[tokio::test]
async fn rollback_prepared_leaves_the_stock_unchanged() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let (_, vote) = prepare(&app, &gid, json!([{ "item_id": "0", "quantity": 10 }])).await;
    assert_eq!(vote, json!({ "vote": "yes" }));
    assert_eq!(
        rollback_prepared(&app.pool, &gid).await.unwrap(),
        RollbackResult::RolledBack
    );
    assert_eq!(stock_of(&app, "0").await, 10);
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn out_of_stock_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/2/5/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(
        &app,
        &gid,
        json!([{ "item_id": "0", "quantity": 5 }, { "item_id": "1", "quantity": 6 }]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "out_of_stock");
    assert_eq!(vote["business"], true);
    assert_eq!(vote["message"], "item 1 has 5 left, 6 wanted");
    assert_eq!(stock_of(&app, "0").await, 5);
    assert_eq!(stock_of(&app, "1").await, 5);
    assert!(app.prepared_gids().await.is_empty());
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());
    assert!(!is_locked(&app, "0").await);
}

#[tokio::test]
async fn an_unknown_item_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/5/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(
        &app,
        &gid,
        json!([{ "item_id": "0", "quantity": 1 }, { "item_id": "nope", "quantity": 1 }]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "unknown_item");
    assert_eq!(vote["business"], true);
    assert_eq!(stock_of(&app, "0").await, 5);
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn a_repeated_prepare_with_the_same_gid_votes_yes_without_applying_twice() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let items = json!([{ "item_id": "0", "quantity": 4 }]);
    let (status, vote) = prepare(&app, &gid, items.clone()).await;
    assert_eq!((status, vote), (StatusCode::OK, json!({ "vote": "yes" })));
    app.assert_resends_apply_nothing_twice(&gid, json!({ "items": items }))
        .await;
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(stock_of(&app, "0").await, 6);
}

#[tokio::test]
async fn a_row_locked_by_another_prepared_branch_makes_prepare_vote_a_transient_no() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/1").await.0, StatusCode::OK);
    let holder = new_gid();
    let (_, vote) = prepare(&app, &holder, json!([{ "item_id": "0", "quantity": 1 }])).await;
    assert_eq!(vote, json!({ "vote": "yes" }));

    let waiter = new_gid();
    let body = json!({
        "gid": waiter.to_string(),
        "deadline": twopc::Deadline::after(std::time::Duration::from_millis(50)),
        "work": { "items": [{ "item_id": "0", "quantity": 1 }] },
    });
    let (status, vote) = app.post_json(PREPARE, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["business"], false);
    assert_eq!(app.prepared_gids().await, vec![holder.to_string()]);

    assert_eq!(
        rollback_prepared(&app.pool, &holder).await.unwrap(),
        RollbackResult::RolledBack
    );
    assert_eq!(stock_of(&app, "0").await, 10);
}

#[tokio::test]
async fn a_malformed_gid_is_refused_with_400() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/1").await.0, StatusCode::OK);
    let good = new_gid().to_string();
    for gid in [
        "".to_owned(),
        "nope".to_owned(),
        format!("{good}'; drop table items; --"),
        good.to_uppercase(),
    ] {
        let body = json!({
            "gid": gid,
            "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)),
            "work": { "items": [{ "item_id": "0", "quantity": 1 }] },
        });
        let (status, reply) = app.post_json(PREPARE, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{gid:?}: {reply}");
    }
    assert_eq!(stock_of(&app, "0").await, 10);
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn malformed_work_is_refused_with_400_and_prepares_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/1").await.0, StatusCode::OK);
    for work in [
        json!({}),
        json!({ "items": "0" }),
        json!({ "items": [{ "item_id": "0", "quantity": 0 }] }),
        json!({ "items": [{ "item_id": "0", "quantity": -1 }] }),
        json!({ "items": [{ "item_id": "0", "quantity": 1.5 }] }),
        json!({ "items": [{ "item_id": "", "quantity": 1 }] }),
        json!({ "items": [{ "item_id": "x".repeat(1025), "quantity": 1 }] }),
        json!({ "items": [{ "item_id": "0", "quantity": 1 }, { "item_id": "0", "quantity": 1 }] }),
        json!({ "items": [{ "item_id": "0", "quantity": 1, "price": 3 }] }),
    ] {
        let body = json!({ "gid": new_gid().to_string(), "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)), "work": work });
        let (status, reply) = app.post_json(PREPARE, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{work}: {reply}");
    }
    assert_eq!(stock_of(&app, "0").await, 10);
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn stock_taken_while_a_branch_waited_for_its_lock_is_refused_with_what_is_left() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/2/1/1").await.0, StatusCode::OK);
    assert_eq!(app.post("/stock/add/0/9").await.0, StatusCode::OK);
    let first = new_gid();
    let (_, vote) = prepare(&app, &first, json!([{ "item_id": "1", "quantity": 1 }])).await;
    assert_eq!(vote, json!({ "vote": "yes" }));

    // The second sees the committed stock of 1 and queues on the row the first holds.
    let second = new_gid();
    let items = json!([{ "item_id": "0", "quantity": 2 }, { "item_id": "1", "quantity": 1 }]);
    let ((status, vote), committed) = tokio::join!(prepare(&app, &second, items), async {
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
        stock_of(&app, "0").await,
        10,
        "nothing taken from the item that had enough"
    );
    assert_eq!(stock_of(&app, "1").await, 0);
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

async fn prepare_batch(app: &TestServer, gid: &Gid, members: Value) -> (StatusCode, Value) {
    let body = json!({ "gid": gid.to_string(), "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)), "work": members });
    app.post_json(PREPARE, &body).await
}

#[tokio::test]
async fn a_batch_takes_every_members_stock_in_one_prepared_branch() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/3/10/1").await.0, StatusCode::OK);
    let gid = new_gid();
    let members = json!([
        { "items": [{ "item_id": "2", "quantity": 3 }, { "item_id": "0", "quantity": 1 }] },
        { "items": [{ "item_id": "0", "quantity": 9 }] },
    ]);
    let (status, vote) = prepare_batch(&app, &gid, members).await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));
    assert_eq!(app.prepared_gids().await, vec![gid.to_string()]);
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(stock_of(&app, "0").await, 0);
    assert_eq!(stock_of(&app, "1").await, 10);
    assert_eq!(stock_of(&app, "2").await, 7);
}

#[tokio::test]
async fn a_batch_with_one_member_short_is_refused_whole_naming_that_member() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/2/10/1").await.0, StatusCode::OK);
    let gid = new_gid();
    // Each member alone fits; the second does not fit after the first.
    let members = json!([
        { "items": [{ "item_id": "1", "quantity": 1 }, { "item_id": "0", "quantity": 6 }] },
        { "items": [{ "item_id": "0", "quantity": 6 }] },
        { "items": [{ "item_id": "1", "quantity": 1 }] },
    ]);
    let (status, vote) = prepare_batch(&app, &gid, members).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "out_of_stock");
    assert_eq!(vote["business"], true);
    assert_eq!(vote["member"], 1, "{vote}");
    assert!(app.prepared_gids().await.is_empty());
    assert_eq!(
        stock_of(&app, "0").await,
        10,
        "the first member's take is undone too"
    );
    assert_eq!(stock_of(&app, "1").await, 10);
    assert!(!is_locked(&app, "0").await);

    let (status, reply) = prepare_batch(&app, &new_gid(), json!([])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, reply) = prepare_batch(
        &app,
        &new_gid(),
        json!([{ "items": [{ "item_id": "0", "quantity": 0 }] }]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
}
