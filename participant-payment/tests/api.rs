//! The public `/payment` API against a real database. What the `/stock` API does alike is
//! `participant_server::testing`'s; what is the payment API's own is here.

mod support;

participant_server::shared_api_tests!(support::spawn_app);

use participant_server::testing::BadInput;
use reqwest::StatusCode;
use serde_json::Value;
use support::{spawn_app, TestServer};

async fn credit(app: &TestServer, id: &str) -> i64 {
    let (status, body) = app.get(&format!("/payment/find_user/{id}")).await;
    assert_eq!(status, StatusCode::OK, "find_user {id}: {body}");
    let user: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(user["user_id"], id);
    user["credit"].as_i64().unwrap()
}

#[tokio::test]
async fn the_classic_scenario_adds_funds_and_pays() {
    let app = spawn_app().await;
    let (status, body) = app.post("/payment/create_user").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user: Value = serde_json::from_str(&body).unwrap();
    let id = user["user_id"].as_str().unwrap().to_owned();
    assert_eq!(credit(&app, &id).await, 0);

    assert_eq!(
        app.post(&format!("/payment/add_funds/{id}/15")).await.0,
        StatusCode::OK
    );
    assert_eq!(credit(&app, &id).await, 15);
    assert_eq!(
        app.post(&format!("/payment/pay/{id}/10")).await.0,
        StatusCode::OK
    );
    assert_eq!(credit(&app, &id).await, 5);
}

#[tokio::test]
async fn replies_with_a_body_are_json() {
    spawn_app()
        .await
        .assert_replies_are_json(&[
            ("/payment/create_user", true),
            ("/payment/batch_init/1/1", true),
            ("/payment/find_user/0", false),
        ])
        .await;
}

#[tokio::test]
async fn batch_init_creates_users_zero_to_n_minus_one_and_overwrites_them() {
    let app = spawn_app().await;
    let (status, body) = app.post("/payment/batch_init/3/10").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(reply["msg"].is_string());
    for id in ["0", "1", "2"] {
        assert_eq!(credit(&app, id).await, 10);
    }
    assert_eq!(
        app.get("/payment/find_user/3").await.0,
        StatusCode::BAD_REQUEST
    );

    assert_eq!(app.post("/payment/pay/1/4").await.0, StatusCode::OK);
    assert_eq!(app.post("/payment/batch_init/2/20").await.0, StatusCode::OK);
    assert_eq!(credit(&app, "0").await, 20);
    assert_eq!(credit(&app, "1").await, 20);
    assert_eq!(credit(&app, "2").await, 10);
    assert_eq!(app.row_count().await, 3);
}

#[tokio::test]
async fn batch_init_of_a_hundred_thousand_users_creates_every_one() {
    let app = spawn_app().await;
    let (status, body) = app.post("/payment/batch_init/100000/1000000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.row_count().await, 100_000);
    assert_eq!(credit(&app, "99999").await, 1_000_000);
}

#[tokio::test]
async fn bad_input_on_every_route_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let long_id = "x".repeat(1025);
    let long_number = "9".repeat(1025);
    let over = "9223372036854775808";

    app.assert_bad_input_refused(BadInput {
        bad_posts: vec![
            // batch_init
            "/payment/batch_init/0/1".to_owned(),
            "/payment/batch_init/-1/1".to_owned(),
            "/payment/batch_init/x/1".to_owned(),
            "/payment/batch_init/1/-1".to_owned(),
            "/payment/batch_init/1/x".to_owned(),
            "/payment/batch_init/1/1.5".to_owned(),
            "/payment/batch_init/1000001/1".to_owned(),
            format!("/payment/batch_init/{over}/1"),
            format!("/payment/batch_init/1/{over}"),
            format!("/payment/batch_init/1/{long_number}"),
            "/payment/batch_init//1".to_owned(),
            // add_funds and pay
            "/payment/add_funds/0/0".to_owned(),
            "/payment/add_funds/0/-1".to_owned(),
            "/payment/add_funds/0/abc".to_owned(),
            "/payment/add_funds/0/+1".to_owned(),
            "/payment/add_funds/0/%20".to_owned(),
            format!("/payment/add_funds/0/{over}"),
            format!("/payment/add_funds/0/{long_number}"),
            "/payment/add_funds/unknown/1".to_owned(),
            format!("/payment/add_funds/{long_id}/1"),
            "/payment/add_funds/a%0Ab/1".to_owned(),
            "/payment/add_funds//1".to_owned(),
            "/payment/pay/0/0".to_owned(),
            "/payment/pay/0/-1".to_owned(),
            "/payment/pay/0/abc".to_owned(),
            format!("/payment/pay/0/{over}"),
            format!("/payment/pay/0/{long_number}"),
            "/payment/pay/unknown/1".to_owned(),
            format!("/payment/pay/{long_id}/1"),
            "/payment/pay//1".to_owned(),
        ],
        bad_gets: vec![
            "/payment/find_user/unknown".to_owned(),
            format!("/payment/find_user/{long_id}"),
            "/payment/find_user/a%00b".to_owned(),
        ],
        // A trailing empty segment and unknown routes match no route at all.
        unrouted_posts: &[
            "/payment/add_funds/0/",
            "/payment/pay/0/",
            "/payment/batch_init/1/",
            "/payment/create_user/1",
            "/payment/nothing",
            "/payment/pay/0/1/2",
            "/pay/0/1",
        ],
        unrouted_gets: &["/payment/find_user/"],
        post_only: &[
            "/payment/add_funds/0/1",
            "/payment/pay/0/1",
            "/payment/create_user",
        ],
        get_only: &["/payment/find_user/0"],
    })
    .await;

    assert_eq!(credit(&app, "0").await, 10);
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn pay_below_zero_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/3").await.0, StatusCode::OK);
    let (status, body) = app.post("/payment/pay/0/4").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("credit 3"), "{body}");
    assert_eq!(credit(&app, "0").await, 3);
    assert_eq!(app.post("/payment/pay/0/3").await.0, StatusCode::OK);
    assert_eq!(credit(&app, "0").await, 0);
    assert_eq!(
        app.post("/payment/pay/0/1").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(credit(&app, "0").await, 0);
}

#[tokio::test]
async fn adding_funds_past_i64_max_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let start = i64::MAX - 5;
    assert_eq!(
        app.post(&format!("/payment/batch_init/1/{start}")).await.0,
        StatusCode::OK
    );
    let (status, body) = app.post("/payment/add_funds/0/6").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(credit(&app, "0").await, start);
    assert_eq!(app.post("/payment/add_funds/0/5").await.0, StatusCode::OK);
    assert_eq!(credit(&app, "0").await, i64::MAX);
}
