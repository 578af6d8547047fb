//! `checkout`: fresh checkouts, every order checked out exactly once, at 16 and 64 clients,
//! each level on its own range of batch-loaded orders.

use reqwest::Method;

use super::{exhausted_note, Bench, EachOnce};
use crate::load::{self, Load};
use crate::report::{Report, Row};
use crate::sections::Section;

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    for (clients, ids) in bench.scale.checkout_runs() {
        bench.loaded.orders_unpaid = false;
        let gateway = bench.gateway.clone();
        let orders = EachOnce::new(&ids);
        let load = Load {
            label: format!("checkout x{clients}"),
            clients,
            duration: Some(bench.scale.duration),
        };
        let stats = load::run(&load, move || {
            let gateway = gateway.clone();
            let path = orders.take().map(|id| format!("/orders/checkout/{id}"));
            async move { Some(gateway.call(Method::POST, &path?).await) }
        })
        .await?;
        bench.checkout_rates.insert(clients, stats.per_second());
        report.add(Row::load(
            Section::Checkout,
            format!("POST /orders/checkout, orders {}..{}", ids.start, ids.end),
            clients,
            &stats,
        ));
        if let Some(note) = exhausted_note(&stats, &ids) {
            report.note(format!("checkout x{clients}: {note}"));
        }
    }
    Ok(())
}
