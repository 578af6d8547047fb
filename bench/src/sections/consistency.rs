//! `consistency`: the course's consistency scenario (`test_support::Consistency`, the one the
//! system tests run), timed. One item with stock 100 and price 1, 1000 users with credit 1,
//! 1000 orders of one unit created one by one for random users, then 1000 checkouts with 100
//! in flight. Exactly 100 can succeed; the counts are printed as a sanity line, not asserted
//! (the system tests do that).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use test_support::{books, Consistency, CONSISTENCY_ORDERS, CONSISTENCY_STOCK};

use super::Bench;
use crate::gateway::Requests;
use crate::load::{self, Load};
use crate::report::{Report, Row};
use crate::sections::Section;

const IN_FLIGHT: usize = 100;

#[derive(Deserialize)]
struct Item {
    stock: i64,
}

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    // Item 0 and users 0..999 are overwritten: the batch-loaded catalog is gone.
    bench.loaded.catalog = false;
    let gateway = bench.gateway.clone();

    let started = Instant::now();
    let last_progress = Mutex::new(Instant::now());
    // One creator: the orders are created one by one, as the course's test does.
    let scenario = Consistency::populate(&gateway, 1, move |created| {
        let mut last = last_progress
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if last.elapsed() >= Duration::from_secs(1) {
            eprintln!("  consistency set-up: {created} orders created");
            *last = Instant::now();
        }
    })
    .await?;
    report.add(Row::timing(
        Section::Consistency,
        format!("set-up: 2 batch_init + {CONSISTENCY_ORDERS} orders one by one"),
        Some(CONSISTENCY_ORDERS as u64),
        started.elapsed(),
    ));

    let orders = Arc::new(scenario.orders);
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
        format!("{CONSISTENCY_ORDERS} checkouts, stock {CONSISTENCY_STOCK}"),
        IN_FLIGHT,
        &stats,
    ));

    let item: Item = bench.gateway.get_json("/stock/find/0").await?;
    let credit = books::consistency_credit_left(&bench.system).await;
    let client_errors: u64 = stats.rejected.range(400..500).map(|(_, n)| n).sum();
    let server_errors: u64 = stats.rejected.range(500..).map(|(_, n)| n).sum();
    report.note(format!(
        "consistency sanity: {} x 200, {client_errors} x 4xx, {server_errors} x 5xx, {} failed; \
         stock {}, credit left {credit} (expected 100 x 200, 900 x 4xx, stock 0, credit 900)",
        stats.ok, stats.failed, item.stock
    ));
    Ok(())
}
