//! Phase one of the payment branch (`POST /_2pc/prepare`), finished the way the coordinator
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

async fn credit_of(app: &TestServer, id: &str) -> i64 {
    sqlx::query_scalar("select credit from users where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn prepare(app: &TestServer, gid: &Gid, user_id: &str, amount: i64) -> (StatusCode, Value) {
    let body = json!({
        "gid": gid.to_string(),
        "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)),
        "work": { "user_id": user_id, "amount": amount },
    });
    app.post_json(PREPARE, &body).await
}

/// True when another transaction holds a row lock on the user.
async fn is_locked(app: &TestServer, id: &str) -> bool {
    let mut tx = app.pool.begin().await.unwrap();
    let result = sqlx::query("select 1 from users where id = $1 for update nowait")
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
async fn a_yes_vote_keeps_the_branch_prepared_and_the_user_locked_until_commit() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/2/10").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(&app, &gid, "0", 4).await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));

    assert_eq!(app.prepared_gids().await, vec![gid.to_string()]);
    assert_eq!(credit_of(&app, "0").await, 10);
    assert!(is_locked(&app, "0").await);
    assert!(!is_locked(&app, "1").await);
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());

    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(credit_of(&app, "0").await, 6);
    assert_eq!(credit_of(&app, "1").await, 10);
    assert!(marker_exists(&app.pool, &gid).await.unwrap());
    assert!(app.prepared_gids().await.is_empty());
    assert!(!is_locked(&app, "0").await);
}

#[tokio::test]
async fn rollback_prepared_leaves_the_credit_unchanged() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let gid = new_gid();
    let (_, vote) = prepare(&app, &gid, "0", 10).await;
    assert_eq!(vote, json!({ "vote": "yes" }));
    assert_eq!(
        rollback_prepared(&app.pool, &gid).await.unwrap(),
        RollbackResult::RolledBack
    );
    assert_eq!(credit_of(&app, "0").await, 10);
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn insufficient_credit_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/5").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(&app, &gid, "0", 6).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "insufficient_credit");
    assert_eq!(vote["business"], true);
    assert_eq!(credit_of(&app, "0").await, 5);
    assert!(app.prepared_gids().await.is_empty());
    assert!(!marker_exists(&app.pool, &gid).await.unwrap());
    assert!(!is_locked(&app, "0").await);
}

#[tokio::test]
async fn an_unknown_user_votes_no_and_leaves_nothing_prepared() {
    let app = spawn_app().await;
    let gid = new_gid();
    let (status, vote) = prepare(&app, &gid, "nobody", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vote["vote"], "no");
    assert_eq!(vote["code"], "unknown_user");
    assert_eq!(vote["business"], true);
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn a_zero_amount_for_a_known_user_votes_yes() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/0").await.0, StatusCode::OK);
    let gid = new_gid();
    let (_, vote) = prepare(&app, &gid, "0", 0).await;
    assert_eq!(vote, json!({ "vote": "yes" }));
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(credit_of(&app, "0").await, 0);
}

#[tokio::test]
async fn a_repeated_prepare_with_the_same_gid_votes_yes_without_applying_twice() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let gid = new_gid();
    let (status, vote) = prepare(&app, &gid, "0", 4).await;
    assert_eq!((status, vote), (StatusCode::OK, json!({ "vote": "yes" })));
    app.assert_resends_apply_nothing_twice(&gid, json!({ "user_id": "0", "amount": 4 }))
        .await;
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(credit_of(&app, "0").await, 6);
}

#[tokio::test]
async fn a_user_locked_by_another_prepared_branch_makes_prepare_vote_a_transient_no() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let holder = new_gid();
    let (_, vote) = prepare(&app, &holder, "0", 1).await;
    assert_eq!(vote, json!({ "vote": "yes" }));

    let waiter = new_gid();
    let body = json!({
        "gid": waiter.to_string(),
        "deadline": twopc::Deadline::after(std::time::Duration::from_millis(50)),
        "work": { "user_id": "0", "amount": 1 },
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
    assert_eq!(credit_of(&app, "0").await, 10);
}

#[tokio::test]
async fn a_malformed_gid_is_refused_with_400() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let good = new_gid().to_string();
    for gid in [
        "".to_owned(),
        "nope".to_owned(),
        format!("{good}'; drop table users; --"),
        good.to_uppercase(),
    ] {
        let body = json!({
            "gid": gid,
            "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)),
            "work": { "user_id": "0", "amount": 1 },
        });
        let (status, reply) = app.post_json(PREPARE, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{gid:?}: {reply}");
    }
    assert_eq!(credit_of(&app, "0").await, 10);
    assert!(app.prepared_gids().await.is_empty());
}

#[tokio::test]
async fn malformed_work_is_refused_with_400_and_prepares_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    for work in [
        json!({}),
        json!({ "user_id": "0" }),
        json!({ "amount": 1 }),
        json!({ "user_id": "0", "amount": -1 }),
        json!({ "user_id": "0", "amount": "1" }),
        json!({ "user_id": "", "amount": 1 }),
        json!({ "user_id": "x".repeat(1025), "amount": 1 }),
        json!({ "user_id": "0", "amount": 1, "order_id": "3" }),
    ] {
        let body = json!({ "gid": new_gid().to_string(), "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)), "work": work });
        let (status, reply) = app.post_json(PREPARE, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{work}: {reply}");
    }
    assert_eq!(credit_of(&app, "0").await, 10);
    assert!(app.prepared_gids().await.is_empty());
}

async fn prepare_batch(app: &TestServer, gid: &Gid, members: Value) -> (StatusCode, Value) {
    let body = json!({
        "gid": gid.to_string(),
        "deadline": twopc::Deadline::after(std::time::Duration::from_secs(1)),
        "work": members,
    });
    app.post_json(PREPARE, &body).await
}

#[tokio::test]
async fn a_batch_charges_every_member_in_one_prepared_branch_or_none_naming_who_could_not_pay() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/3/10").await.0, StatusCode::OK);
    // Users 2 and 0 both pay twice; the last member is user 0's third charge, over its credit.
    let members = json!([
        { "user_id": "2", "amount": 4 },
        { "user_id": "0", "amount": 5 },
        { "user_id": "2", "amount": 6 },
        { "user_id": "0", "amount": 5 },
    ]);
    let gid = new_gid();
    let (status, vote) = prepare_batch(&app, &gid, members.clone()).await;
    assert_eq!((status, &vote), (StatusCode::OK, &json!({ "vote": "yes" })));
    assert_eq!(
        commit_prepared(&app.pool, &gid).await.unwrap(),
        CommitResult::Committed
    );
    assert_eq!(
        [
            credit_of(&app, "0").await,
            credit_of(&app, "1").await,
            credit_of(&app, "2").await
        ],
        [0, 10, 0]
    );

    let refused = json!([
        { "user_id": "1", "amount": 3 },
        { "user_id": "0", "amount": 1 },
        { "user_id": "1", "amount": 3 },
    ]);
    let gid = new_gid();
    let (status, vote) = prepare_batch(&app, &gid, refused).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            vote["vote"].as_str(),
            vote["code"].as_str(),
            vote["member"].as_u64()
        ),
        (Some("no"), Some("insufficient_credit"), Some(1)),
        "{vote}"
    );
    assert!(app.prepared_gids().await.is_empty());
    assert_eq!(
        credit_of(&app, "1").await,
        10,
        "the members before it are undone too"
    );
    assert!(!is_locked(&app, "1").await);
}
