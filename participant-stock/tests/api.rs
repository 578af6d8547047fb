//! The public `/stock` API against a real database. What the `/payment` API does alike is
//! `participant_server::testing`'s; what is the stock API's own is here.

mod support;

participant_server::shared_api_tests!(support::spawn_app);

use participant_server::testing::BadInput;
use reqwest::StatusCode;
use serde_json::Value;
use support::{spawn_app, TestServer};

async fn find(app: &TestServer, id: &str) -> (i64, i64) {
    let (status, body) = app.get(&format!("/stock/find/{id}")).await;
    assert_eq!(status, StatusCode::OK, "find {id}: {body}");
    let item: Value = serde_json::from_str(&body).unwrap();
    (
        item["stock"].as_i64().unwrap(),
        item["price"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn the_classic_scenario_adds_refuses_an_overdraft_and_subtracts() {
    let app = spawn_app().await;
    let (status, body) = app.post("/stock/item/create/5").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let item: Value = serde_json::from_str(&body).unwrap();
    let id = item["item_id"].as_str().unwrap().to_owned();
    assert_eq!(find(&app, &id).await, (0, 5));

    assert_eq!(
        app.post(&format!("/stock/add/{id}/50")).await.0,
        StatusCode::OK
    );
    let (status, body) = app.post(&format!("/stock/subtract/{id}/200")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(find(&app, &id).await, (50, 5));
    assert_eq!(
        app.post(&format!("/stock/subtract/{id}/15")).await.0,
        StatusCode::OK
    );
    assert_eq!(find(&app, &id).await, (35, 5));
}

#[tokio::test]
async fn replies_with_a_body_are_json() {
    spawn_app()
        .await
        .assert_replies_are_json(&[
            ("/stock/item/create/1", true),
            ("/stock/batch_init/1/1/1", true),
            ("/stock/find/0", false),
        ])
        .await;
}

#[tokio::test]
async fn batch_init_creates_items_zero_to_n_minus_one_and_overwrites_them() {
    let app = spawn_app().await;
    let (status, body) = app.post("/stock/batch_init/3/10/7").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(reply["msg"].is_string());
    for id in ["0", "1", "2"] {
        assert_eq!(find(&app, id).await, (10, 7));
    }
    assert_eq!(app.get("/stock/find/3").await.0, StatusCode::BAD_REQUEST);

    assert_eq!(app.post("/stock/subtract/1/4").await.0, StatusCode::OK);
    assert_eq!(app.post("/stock/batch_init/2/20/1").await.0, StatusCode::OK);
    assert_eq!(find(&app, "0").await, (20, 1));
    assert_eq!(find(&app, "1").await, (20, 1));
    assert_eq!(find(&app, "2").await, (10, 7));
    assert_eq!(app.row_count().await, 3);
}

#[tokio::test]
async fn batch_init_of_a_hundred_thousand_items_creates_every_one() {
    let app = spawn_app().await;
    let (status, body) = app.post("/stock/batch_init/100000/1000000/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.row_count().await, 100_000);
    assert_eq!(find(&app, "99999").await, (1_000_000, 1));
}

#[tokio::test]
async fn bad_input_on_every_route_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/3").await.0, StatusCode::OK);
    let long_id = "x".repeat(1025);
    let long_number = "9".repeat(1025);
    let over = "9223372036854775808";

    app.assert_bad_input_refused(BadInput {
        bad_posts: vec![
            // create
            "/stock/item/create/abc".to_owned(),
            "/stock/item/create/-1".to_owned(),
            "/stock/item/create/1.5".to_owned(),
            "/stock/item/create/+1".to_owned(),
            "/stock/item/create/%20".to_owned(),
            format!("/stock/item/create/{over}"),
            format!("/stock/item/create/{long_number}"),
            // batch_init
            "/stock/batch_init/0/1/1".to_owned(),
            "/stock/batch_init/-1/1/1".to_owned(),
            "/stock/batch_init/x/1/1".to_owned(),
            "/stock/batch_init/1/-1/1".to_owned(),
            "/stock/batch_init/1/x/1".to_owned(),
            "/stock/batch_init/1/1/-1".to_owned(),
            "/stock/batch_init/1/1/x".to_owned(),
            "/stock/batch_init/1000001/1/1".to_owned(),
            format!("/stock/batch_init/{over}/1/1"),
            format!("/stock/batch_init/1/{over}/1"),
            format!("/stock/batch_init/1/1/{long_number}"),
            // add and subtract
            "/stock/add/0/0".to_owned(),
            "/stock/add/0/-1".to_owned(),
            "/stock/add/0/abc".to_owned(),
            "/stock/add/0/1.0".to_owned(),
            format!("/stock/add/0/{over}"),
            format!("/stock/add/0/{long_number}"),
            "/stock/add/unknown/1".to_owned(),
            format!("/stock/add/{long_id}/1"),
            "/stock/add/a%0Ab/1".to_owned(),
            // An empty segment inside the path reaches the handler as an empty parameter.
            "/stock/add//1".to_owned(),
            "/stock/subtract//1".to_owned(),
            "/stock/batch_init//1/1".to_owned(),
            "/stock/batch_init/1//1".to_owned(),
            "/stock/subtract/0/0".to_owned(),
            "/stock/subtract/0/-1".to_owned(),
            "/stock/subtract/0/abc".to_owned(),
            format!("/stock/subtract/0/{over}"),
            format!("/stock/subtract/0/{long_number}"),
            "/stock/subtract/unknown/1".to_owned(),
            format!("/stock/subtract/{long_id}/1"),
        ],
        bad_gets: vec![
            "/stock/find/unknown".to_owned(),
            format!("/stock/find/{long_id}"),
            "/stock/find/a%00b".to_owned(),
        ],
        // A trailing empty segment and unknown routes match no route at all.
        unrouted_posts: &[
            "/stock/item/create/",
            "/stock/add/0/",
            "/stock/subtract/0/",
            "/stock/nothing",
            "/stock/add/0/1/2",
            "/add/0/1",
        ],
        unrouted_gets: &["/stock/find/"],
        post_only: &[
            "/stock/add/0/1",
            "/stock/subtract/0/1",
            "/stock/item/create/1",
        ],
        get_only: &["/stock/find/0"],
    })
    .await;

    assert_eq!(find(&app, "0").await, (10, 3));
    assert_eq!(app.row_count().await, 1);
}

#[tokio::test]
async fn subtract_below_zero_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/3/1").await.0, StatusCode::OK);
    let (status, body) = app.post("/stock/subtract/0/4").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("3 left"), "{body}");
    assert_eq!(find(&app, "0").await, (3, 1));
    assert_eq!(app.post("/stock/subtract/0/3").await.0, StatusCode::OK);
    assert_eq!(find(&app, "0").await, (0, 1));
    assert_eq!(
        app.post("/stock/subtract/0/1").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(find(&app, "0").await, (0, 1));
}

#[tokio::test]
async fn adding_past_i64_max_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let start = i64::MAX - 5;
    assert_eq!(
        app.post(&format!("/stock/batch_init/1/{start}/1")).await.0,
        StatusCode::OK
    );
    let (status, body) = app.post("/stock/add/0/6").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(find(&app, "0").await, (start, 1));
    assert_eq!(app.post("/stock/add/0/5").await.0, StatusCode::OK);
    assert_eq!(find(&app, "0").await, (i64::MAX, 1));
}
