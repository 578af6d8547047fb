//! The public `/stock` API against a real database.

mod support;

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

async fn item_count(app: &TestServer) -> i64 {
    sqlx::query_scalar("select count(*) from items")
        .fetch_one(&app.pool)
        .await
        .unwrap()
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
    let app = spawn_app().await;
    for (path, post) in [
        ("/stock/item/create/1", true),
        ("/stock/batch_init/1/1/1", true),
        ("/stock/find/0", false),
    ] {
        let url = format!("{}{path}", app.base);
        let request = if post {
            app.client.post(url)
        } else {
            app.client.get(url)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
    }
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
    assert_eq!(item_count(&app).await, 3);
}

#[tokio::test]
async fn batch_init_of_a_hundred_thousand_items_creates_every_one() {
    let app = spawn_app().await;
    let (status, body) = app.post("/stock/batch_init/100000/1000000/1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(item_count(&app).await, 100_000);
    assert_eq!(find(&app, "99999").await, (1_000_000, 1));
}

#[tokio::test]
async fn bad_input_on_every_route_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/10/3").await.0, StatusCode::OK);
    let long_id = "x".repeat(1025);
    let long_number = "9".repeat(1025);
    let over = "9223372036854775808";

    let bad_posts = [
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
    ];
    for path in &bad_posts {
        let (status, body) = app.post(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {path}: {body}");
        assert!(!body.is_empty(), "POST {path} says why");
    }

    for path in [
        "/stock/find/unknown".to_owned(),
        format!("/stock/find/{long_id}"),
        "/stock/find/a%00b".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}: {body}");
    }

    // A trailing empty segment and unknown routes match no route at all.
    for path in [
        "/stock/item/create/",
        "/stock/add/0/",
        "/stock/subtract/0/",
        "/stock/nothing",
        "/stock/add/0/1/2",
        "/add/0/1",
    ] {
        assert_eq!(app.post(path).await.0, StatusCode::NOT_FOUND, "POST {path}");
    }
    assert_eq!(app.get("/stock/find/").await.0, StatusCode::NOT_FOUND);

    // The right path with the wrong method.
    for path in [
        "/stock/add/0/1",
        "/stock/subtract/0/1",
        "/stock/item/create/1",
    ] {
        assert_eq!(
            app.get(path).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}"
        );
    }
    assert_eq!(
        app.post("/stock/find/0").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    assert_eq!(find(&app, "0").await, (10, 3));
    assert_eq!(item_count(&app).await, 1);
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

#[tokio::test]
async fn two_hundred_concurrent_adds_of_one_lose_no_update() {
    let app = spawn_app().await;
    assert_eq!(app.post("/stock/batch_init/1/0/1").await.0, StatusCode::OK);
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let request = app.client.post(format!("{}/stock/add/0/1", app.base));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(find(&app, "0").await, (200, 1));
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await, (StatusCode::OK, "ok".to_owned()));
    assert_eq!(app.post("/stock/batch_init/1/1/1").await.0, StatusCode::OK);
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
}
