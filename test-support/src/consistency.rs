//! The course's consistency scenario: one item with stock 100 and price 1, 1000 users with
//! credit 1, 1000 orders of one unit of that item by random users. Exactly 100 checkouts can
//! succeed. The system tests run it under faults and assert its books; the benchmark times it.

use anyhow::Context;
use reqwest::Method;
use serde::Deserialize;

use crate::Client;

pub const CONSISTENCY_STOCK: i64 = 100;
pub const CONSISTENCY_USERS: i64 = 1000;
pub const CONSISTENCY_ORDERS: usize = 1000;

/// The scenario's orders, created and not yet checked out.
pub struct Consistency {
    /// The one item, `"0"`.
    pub item: String,
    pub orders: Vec<String>,
}

#[derive(Deserialize)]
struct Created {
    order_id: String,
}

impl Consistency {
    /// Builds the scenario as the course's consistency test does: item 0 and users 0..999
    /// (over)written by `batch_init`, then orders created one by one, each for a random user
    /// with one unit of the item, by `creators` concurrent clients. `created` is told the
    /// number of orders made so far after each one.
    pub async fn populate(
        client: &Client,
        creators: usize,
        created: impl Fn(usize) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        client
            .must_succeed(
                Method::POST,
                &format!("/stock/batch_init/1/{CONSISTENCY_STOCK}/1"),
            )
            .await?;
        client
            .must_succeed(
                Method::POST,
                &format!("/payment/batch_init/{CONSISTENCY_USERS}/1"),
            )
            .await?;
        let item = "0".to_owned();
        let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let created = std::sync::Arc::new(created);
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..creators {
            let (client, item) = (client.clone(), item.clone());
            let (made, created) = (made.clone(), created.clone());
            workers.spawn(async move {
                let mut orders = Vec::new();
                for _ in (worker..CONSISTENCY_ORDERS).step_by(creators) {
                    // A random user per order: many users hold several orders.
                    let user = rand::random_range(0..CONSISTENCY_USERS);
                    let path = format!("/orders/create/{user}");
                    let order = client
                        .must_succeed_json::<Created>(Method::POST, &path)
                        .await?
                        .order_id;
                    let path = format!("/orders/addItem/{order}/{item}/1");
                    client.must_succeed(Method::POST, &path).await?;
                    orders.push(order);
                    created(made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
                }
                anyhow::Ok(orders)
            });
        }
        let mut orders = Vec::with_capacity(CONSISTENCY_ORDERS);
        while let Some(made) = workers.join_next().await {
            orders.extend(made.context("an order creator")??);
        }
        Ok(Self { item, orders })
    }
}
