//! The public `/payment` API against a real database.

mod support;

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

async fn user_count(app: &TestServer) -> i64 {
    sqlx::query_scalar("select count(*) from users")
        .fetch_one(&app.pool)
        .await
        .unwrap()
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
    let app = spawn_app().await;
    for (path, post) in [
        ("/payment/create_user", true),
        ("/payment/batch_init/1/1", true),
        ("/payment/find_user/0", false),
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
    assert_eq!(user_count(&app).await, 3);
}

#[tokio::test]
async fn batch_init_of_a_hundred_thousand_users_creates_every_one() {
    let app = spawn_app().await;
    let (status, body) = app.post("/payment/batch_init/100000/1000000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(user_count(&app).await, 100_000);
    assert_eq!(credit(&app, "99999").await, 1_000_000);
}

#[tokio::test]
async fn bad_input_on_every_route_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/10").await.0, StatusCode::OK);
    let long_id = "x".repeat(1025);
    let long_number = "9".repeat(1025);
    let over = "9223372036854775808";

    let bad_posts = [
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
    ];
    for path in &bad_posts {
        let (status, body) = app.post(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {path}: {body}");
        assert!(!body.is_empty(), "POST {path} says why");
    }

    for path in [
        "/payment/find_user/unknown".to_owned(),
        format!("/payment/find_user/{long_id}"),
        "/payment/find_user/a%00b".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}: {body}");
    }

    // A trailing empty segment and unknown routes match no route at all.
    for path in [
        "/payment/add_funds/0/",
        "/payment/pay/0/",
        "/payment/batch_init/1/",
        "/payment/create_user/1",
        "/payment/nothing",
        "/payment/pay/0/1/2",
        "/pay/0/1",
    ] {
        assert_eq!(app.post(path).await.0, StatusCode::NOT_FOUND, "POST {path}");
    }
    assert_eq!(
        app.get("/payment/find_user/").await.0,
        StatusCode::NOT_FOUND
    );

    // The right path with the wrong method.
    for path in [
        "/payment/add_funds/0/1",
        "/payment/pay/0/1",
        "/payment/create_user",
    ] {
        assert_eq!(
            app.get(path).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}"
        );
    }
    assert_eq!(
        app.post("/payment/find_user/0").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    assert_eq!(credit(&app, "0").await, 10);
    assert_eq!(user_count(&app).await, 1);
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

#[tokio::test]
async fn two_hundred_concurrent_add_funds_of_one_lose_no_update() {
    let app = spawn_app().await;
    assert_eq!(app.post("/payment/batch_init/1/0").await.0, StatusCode::OK);
    let handles: Vec<_> = (0..200)
        .map(|_| {
            let request = app
                .client
                .post(format!("{}/payment/add_funds/0/1", app.base));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(credit(&app, "0").await, 200);
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await, (StatusCode::OK, "ok".to_owned()));
    let (status, _) = app.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
}
