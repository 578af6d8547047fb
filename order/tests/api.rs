//! The order service on a fresh database, with a real stock service for prices. Checkout
//! itself needs the coordinator and is covered by the system tests; here: the public routes,
//! the order's own branch, and a checkout whose coordinator cannot be reached.

use std::time::Duration;

use order::{Config, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};
use service_kit::testing::{fresh_database, TestDatabase};
use sqlx::{Executor, PgPool};
use test_support::Client;
use twopc::Gid;
use uuid::Uuid;

struct World {
    /// The order service's client.
    api: Client,
    /// The stock service's, for the items the orders hold.
    stock: Client,
    pool: PgPool,
    /// The order and the stock databases, dropped with the world (see
    /// [`service_kit::testing::TestDatabase`]).
    _databases: [TestDatabase; 2],
}

async fn world() -> World {
    world_with(|_| {}).await
}

/// The world with the order service's configuration changed by `adjust`.
async fn world_with(adjust: impl FnOnce(&mut Config)) -> World {
    service_kit::telemetry::init_logs();
    let stock_db = fresh_database().await;
    let stock = participant_stock::Server::build(participant_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: stock_db.url.clone(),
        db_max_connections: 4,
    })
    .await
    .unwrap();
    let stock_url = format!("http://127.0.0.1:{}", stock.port());
    tokio::spawn(stock.run_until(std::future::pending()));

    let order_db = fresh_database().await;
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: order_db.url.clone(),
        stock_url: stock_url.parse().unwrap(),
        // Nothing listens on the discard port: the coordinator is unreachable.
        coordinator_urls: vec!["http://127.0.0.1:9".parse().unwrap()],
        phase_one_ms: 500,
        phase_two_wait_ms: 300,
        checkout_deadline_ms: 3_000,
        checkouts_in_flight: 64,
        checkout_queue_ms: 25_000,
        checkout_batches: 2,
        checkout_batch_patience_ms: 200,
        checkout_batch_max: 16,
        db_max_connections: 4,
    };
    adjust(&mut config);
    let server = Server::build(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run_until(std::future::pending()));
    World {
        api: Client::with_limits(base, usize::MAX, Duration::from_secs(60)),
        stock: Client::with_limits(stock_url, usize::MAX, Duration::from_secs(60)),
        pool: PgPool::connect(&order_db.url).await.unwrap(),
        _databases: [order_db, stock_db],
    }
}

impl World {
    /// Claims `order` for `txid`, as a checkout does before it hands the transaction over.
    async fn claim(&self, order: &str, txid: Uuid) {
        sqlx::query("update orders set checkout_txid = $2, checkout_deadline = 0 where id = $1")
            .bind(order)
            .bind(txid)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn prepared(&self) -> i64 {
        sqlx::query_scalar(
            "select count(*) from pg_prepared_xacts where database = current_database()",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn claimed_by(&self, order: &str) -> Option<Uuid> {
        sqlx::query_scalar("select checkout_txid from orders where id = $1")
            .bind(order)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn post(&self, path: &str) -> (StatusCode, String) {
        self.api.post(path).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, body) = self.api.get(path).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn item(&self, price: i64) -> String {
        let (status, body) = self
            .stock
            .post(&format!("/stock/item/create/{price}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str::<Value>(&body).unwrap()["item_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn order(&self, user: &str) -> String {
        let (status, body) = self.post(&format!("/orders/create/{user}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["order_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// An order of `user` holding one unit of a new item priced 1.
    async fn order_of_one_item(&self, user: &str) -> String {
        let item = self.item(1).await;
        let order = self.order(user).await;
        self.post(&format!("/orders/addItem/{order}/{item}/1"))
            .await;
        order
    }

    async fn prepare(&self, gid: &Gid, work: Value) -> (StatusCode, Value) {
        let body = json!({
            "gid": gid.to_string(),
            "deadline": twopc::Deadline::after(Duration::from_secs(1)),
            "work": work,
        });
        self.api.post_json("/_2pc/prepare", &body).await
    }
}

#[tokio::test]
async fn orders_keep_one_line_per_add_item_priced_by_the_stock_service() {
    let world = world().await;
    let a = world.item(5).await;
    let b = world.item(7).await;
    let order = world.order("u1").await;
    for (item, quantity) in [(&a, 2), (&b, 1), (&a, 1)] {
        let (status, body) = world
            .post(&format!("/orders/addItem/{order}/{item}/{quantity}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, found) = world.get(&format!("/orders/find/{order}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        found,
        json!({"order_id": order, "paid": false, "items": [[a, 2], [b, 1], [a, 1]], "user_id": "u1", "total_cost": 22})
    );
}

#[tokio::test]
async fn add_item_refuses_unknown_ids_bad_quantities_and_overflow_and_changes_nothing() {
    let world = world().await;
    let item = world.item(i64::MAX / 2).await;
    let order = world.order("u1").await;
    for path in [
        format!("/orders/addItem/nope/{item}/1"),
        format!("/orders/addItem/{order}/nope/1"),
        format!("/orders/addItem/{order}/{item}/0"),
        format!("/orders/addItem/{order}/{item}/-1"),
        format!("/orders/addItem/{order}/{item}/x"),
        format!("/orders/addItem/{order}/{item}/3"),
    ] {
        let (status, body) = world.post(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
    let (_, found) = world.get(&format!("/orders/find/{order}")).await;
    assert_eq!(
        (found["items"].clone(), found["total_cost"].clone()),
        (json!([]), json!(0))
    );
}

#[tokio::test]
async fn batch_init_creates_numbered_unpaid_orders_of_two_items() {
    let world = world().await;
    let (status, body) = world.post("/orders/batch_init/100/10/5/4").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, found) = world.get("/orders/find/99").await;
    assert_eq!(found["total_cost"], 8);
    assert_eq!(found["paid"], false);
    assert_eq!(found["items"].as_array().unwrap().len(), 2);
    let user: i64 = found["user_id"].as_str().unwrap().parse().unwrap();
    assert!((0..5).contains(&user));
    let (status, _) = world.get("/orders/find/100").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_order_branch_marks_the_order_paid_only_once_committed() {
    let world = world().await;
    let order = world.order("u1").await;
    let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
    world.claim(&order, gid.txid()).await;
    let (status, vote) = world
        .prepare(&gid, json!({"order_id": order, "version": 0}))
        .await;
    assert_eq!(
        (status, vote["vote"].clone()),
        (StatusCode::OK, json!("yes"))
    );
    let (_, found) = world.get(&format!("/orders/find/{order}")).await;
    assert_eq!(found["paid"], false, "not visible before COMMIT PREPARED");

    twopc::finish::commit_prepared(&world.pool, &gid)
        .await
        .unwrap();
    let (_, found) = world.get(&format!("/orders/find/{order}")).await;
    assert_eq!(found["paid"], true);
}

#[tokio::test]
async fn the_order_branch_votes_no_for_a_paid_changed_or_unknown_order() {
    let world = world().await;
    let order = world.order_of_one_item("u1").await;

    let vote = |code: &str| json!({"vote": "no", "code": code});
    for (work, code) in [
        (json!({"order_id": order, "version": 0}), "order_changed"),
        (json!({"order_id": "nope", "version": 0}), "unknown_order"),
    ] {
        let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
        let (status, answer) = world.prepare(&gid, work).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["vote"], vote(code)["vote"]);
        assert_eq!(answer["code"], code);
        assert_eq!(answer["business"], code == "unknown_order", "{answer}");
    }
    world
        .pool
        .execute(format!("update orders set paid = true where id = '{order}'").as_str())
        .await
        .unwrap();
    let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
    let (_, answer) = world
        .prepare(&gid, json!({"order_id": order, "version": 1}))
        .await;
    assert_eq!(answer["code"], "already_paid");
    assert_eq!(answer["business"], true);
    assert_eq!(world.prepared().await, 0);
}

#[tokio::test]
async fn a_checkout_whose_coordinator_cannot_be_reached_is_refused_and_changes_nothing() {
    let world = world().await;
    let order = world.order_of_one_item("u1").await;
    let (status, body) = world.post(&format!("/orders/checkout/{order}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, found) = world.get(&format!("/orders/find/{order}")).await;
    assert_eq!(found["paid"], false);
    assert_eq!(
        world.claimed_by(&order).await,
        None,
        "a checkout that ended in 409 leaves nothing for the next one to follow"
    );
}

#[tokio::test]
async fn the_order_branch_votes_no_for_a_transaction_that_does_not_hold_the_claim() {
    let world = world().await;
    let order = world.order("u1").await;
    let holder = Uuid::new_v4();
    world.claim(&order, holder).await;
    let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
    let (status, answer) = world
        .prepare(&gid, json!({"order_id": order, "version": 0}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["vote"], "no");
    assert_eq!(answer["code"], "superseded");
    assert_eq!(answer["business"], false);
    assert_eq!(world.claimed_by(&order).await, Some(holder));
}

/// A batch's orders are paid all or none, and a refusal names the first member that could not
/// be paid, with why; a lone order's names none.
#[tokio::test]
async fn a_batch_of_orders_is_paid_all_or_none_naming_the_first_that_cannot_be() {
    let world = world().await;
    let orders = [
        world.order("u1").await,
        world.order("u2").await,
        world.order("u3").await,
    ];
    let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
    for order in &orders[..2] {
        world.claim(order, gid.txid()).await;
    }
    // The third is claimed by another transaction.
    world.claim(&orders[2], Uuid::new_v4()).await;
    let works = |versions: [i64; 3]| {
        json!(orders
            .iter()
            .zip(versions)
            .map(|(order, version)| json!({"order_id": order, "version": version}))
            .collect::<Vec<_>>())
    };
    for (versions, member, code) in [
        ([0, 0, 0], 2, "superseded"),
        ([0, 7, 0], 1, "order_changed"),
    ] {
        let (status, answer) = world.prepare(&gid, works(versions)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["vote"], "no", "{answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(answer["member"], member, "{answer}");
        assert_eq!(answer["business"], false, "{answer}");
    }
    assert_eq!(world.prepared().await, 0);
    for order in &orders {
        let (_, found) = world.get(&format!("/orders/find/{order}")).await;
        assert_eq!(found["paid"], false, "nothing paid of a refused batch");
    }

    let (_, answer) = world
        .prepare(&gid, json!({"order_id": orders[2], "version": 0}))
        .await;
    assert_eq!(answer["code"], "superseded", "{answer}");
    assert!(
        answer.get("member").is_none(),
        "a lone order is no member: {answer}"
    );

    world.claim(&orders[2], gid.txid()).await;
    let (_, answer) = world.prepare(&gid, works([0, 0, 0])).await;
    assert_eq!(answer, json!({"vote": "yes"}));
    twopc::finish::commit_prepared(&world.pool, &gid)
        .await
        .unwrap();
    for order in &orders {
        let (_, found) = world.get(&format!("/orders/find/{order}")).await;
        assert_eq!(found["paid"], true);
    }
}

#[tokio::test]
async fn the_order_branch_refuses_to_prepare_after_its_deadline() {
    let world = world().await;
    let order = world.order("u1").await;
    let gid = Gid::new("c1", Uuid::new_v4(), "order").unwrap();
    world.claim(&order, gid.txid()).await;
    let response = world
        .api
        .http
        .post(world.api.url("/_2pc/prepare"))
        .json(&json!({
            "gid": gid.to_string(),
            "deadline": twopc::Deadline::from_millis(1),
            "work": {"order_id": order, "version": 0},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["vote"], "no");
    assert_eq!(answer["business"], false);
    assert_eq!(world.prepared().await, 0);
}

#[tokio::test]
async fn checkout_of_an_unknown_order_is_a_400() {
    let world = world().await;
    let (status, _) = world.post("/orders/checkout/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A checkout that finds every place in flight taken for its whole queue wait is refused for
/// load: 503 with `Retry-After`, its order neither claimed nor paid. (The checkout in flight
/// holds its place for its whole budget here: its coordinator is unreachable.)
#[tokio::test]
async fn a_checkout_that_waits_out_the_queue_is_refused_for_load_and_changes_nothing() {
    let world = world_with(|config| {
        config.checkouts_in_flight = 1;
        config.checkout_queue_ms = 200;
    })
    .await;
    let item = world.item(1).await;
    let (running, queued) = (world.order("u1").await, world.order("u2").await);
    for order in [&running, &queued] {
        world
            .post(&format!("/orders/addItem/{order}/{item}/1"))
            .await;
    }
    let first = tokio::spawn({
        let (http, url) = (
            world.api.http.clone(),
            format!("{}/orders/checkout/{running}", world.api.base),
        );
        async move { http.post(url).send().await.unwrap().status() }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while world.claimed_by(&running).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first checkout never started"
        );
        tokio::task::yield_now().await;
    }
    let response = world
        .api
        .http
        .post(world.api.url(&format!("/orders/checkout/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("1".to_owned())
    );
    assert!(response.text().await.unwrap().contains("nothing was done"));
    assert_eq!(world.claimed_by(&queued).await, None, "never claimed");
    let (_, found) = world.get(&format!("/orders/find/{queued}")).await;
    assert_eq!(found["paid"], false);
    assert_eq!(
        first.await.unwrap(),
        StatusCode::CONFLICT,
        "the first ran to its end"
    );
    // With the place free again, the queued order's checkout runs (and meets the same
    // unreachable coordinator).
    let (status, _) = world.post(&format!("/orders/checkout/{queued}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
}
