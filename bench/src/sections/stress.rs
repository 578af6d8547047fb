//! `stress`: the course's stress scenario. Freshly loaded users, items and orders; then many
//! clients each checking out a random order in a loop, so the same order is checked out again
//! and again (a repeat answers 200 and charges nothing).

use reqwest::Method;

use super::{random_id, Bench};
use crate::gateway::Requests;
use crate::load::{self, Load};
use crate::report::{Report, Row};
use crate::sections::Section;

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    bench.loaded.orders_unpaid = false;
    let rows = bench.scale.rows;
    let clients = bench.stress_clients;
    let gateway = bench.gateway.clone();
    let load = Load {
        label: format!("stress x{clients}"),
        clients,
        duration: Some(bench.scale.duration),
    };
    let stats = load::run(&load, move || {
        let gateway = gateway.clone();
        let path = format!("/orders/checkout/{}", random_id(rows));
        async move { Some(gateway.call(Method::POST, &path).await) }
    })
    .await?;
    report.add(Row::load(
        Section::Stress,
        format!("POST /orders/checkout, random of {rows}"),
        clients,
        &stats,
    ));
    Ok(())
}
