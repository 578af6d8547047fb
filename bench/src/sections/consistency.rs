//! `consistency`: the course's consistency scenario, timed. One item with stock 100 and
//! price 1, 1000 users with credit 1, 1000 orders of one unit created one by one for random
//! users, then 1000 checkouts with 100 in flight. Exactly 100 can succeed; the counts are
//! printed as a sanity line, not asserted (the system tests do that).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use launcher::Service;
use reqwest::Method;
use serde::Deserialize;
use sqlx::{Connection, PgConnection};

use super::Bench;
use crate::load::{self, Load};
use crate::report::{Report, Row};
use crate::sections::Section;

const STOCK: i64 = 100;
const USERS: i64 = 1000;
const ORDERS: usize = 1000;
const IN_FLIGHT: usize = 100;

#[derive(Deserialize)]
struct Created {
    order_id: String,
}

#[derive(Deserialize)]
struct Item {
    stock: i64,
}

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    // Item 0 and users 0..999 are overwritten: the batch-loaded catalog is gone.
    bench.loaded.catalog = false;
    let gateway = bench.gateway.clone();

    let started = Instant::now();
    gateway
        .post_ok(&format!("/stock/batch_init/1/{STOCK}/1"))
        .await?;
    gateway
        .post_ok(&format!("/payment/batch_init/{USERS}/1"))
        .await?;
    let mut orders = Vec::with_capacity(ORDERS);
    let mut last_progress = Instant::now();
    for _ in 0..ORDERS {
        let user = rand::random_range(0..USERS);
        let created: Created = gateway.post_json(&format!("/orders/create/{user}")).await?;
        gateway
            .post_ok(&format!("/orders/addItem/{}/0/1", created.order_id))
            .await?;
        orders.push(created.order_id);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprintln!("  consistency set-up: {} orders created", orders.len());
            last_progress = Instant::now();
        }
    }
    report.add(Row::timing(
        Section::Consistency,
        format!("set-up: 2 batch_init + {ORDERS} orders one by one"),
        Some(ORDERS as u64),
        started.elapsed(),
    ));

    let orders = Arc::new(orders);
    let next = Arc::new(AtomicUsize::new(0));
    let load = Load {
        label: "consistency checkouts".to_owned(),
        clients: IN_FLIGHT,
        duration: None,
    };
    let stats = {
        let orders = orders.clone();
        load::run(&load, move || {
            let order = orders.get(next.fetch_add(1, Ordering::Relaxed)).cloned();
            let gateway = gateway.clone();
            async move {
                let path = format!("/orders/checkout/{}", order?);
                Some(gateway.call(Method::POST, &path).await)
            }
        })
        .await?
    };
    report.add(Row::load(
        Section::Consistency,
        format!("{ORDERS} checkouts, stock {STOCK}"),
        IN_FLIGHT,
        &stats,
    ));

    let item: Item = bench.gateway.get_json("/stock/find/0").await?;
    let credit = credit_left(bench).await?;
    let client_errors: u64 = stats.rejected.range(400..500).map(|(_, n)| n).sum();
    let server_errors: u64 = stats.rejected.range(500..).map(|(_, n)| n).sum();
    report.note(format!(
        "consistency sanity: {} x 200, {client_errors} x 4xx, {server_errors} x 5xx, {} failed; \
         stock {}, credit left {credit} (expected 100 x 200, 900 x 4xx, stock 0, credit 900)",
        stats.ok, stats.failed, item.stock
    ));
    Ok(())
}

/// Total credit of users 0..999, read straight from the payment database.
async fn credit_left(bench: &Bench) -> anyhow::Result<i64> {
    let mut db = PgConnection::connect(&bench.database_url(Service::Payment))
        .await
        .context("connecting to the payment database")?;
    let ids: Vec<String> = (0..USERS).map(|id| id.to_string()).collect();
    let credit: Option<i64> =
        sqlx::query_scalar("select sum(credit)::bigint from users where id = any($1)")
            .bind(&ids)
            .fetch_one(&mut db)
            .await
            .context("summing the users' credit")?;
    let _ = db.close().await;
    Ok(credit.unwrap_or(0))
}
