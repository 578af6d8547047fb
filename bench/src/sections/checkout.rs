//! `checkout`: fresh checkouts, every order checked out exactly once, at 4, 16 and 64
//! clients, each level on its own range of batch-loaded orders. `ha-checkout` is the same on
//! the system with Patroni clusters, with the ratio HA/single at each level. Each level also
//! gets the CPU time per checkout of every process kind ([`crate::cpu`]).

use reqwest::Method;

use super::{exhausted_note, Bench, EachOnce};
use crate::cpu::{CpuCost, Snapshot};
use crate::gateway::Requests;
use crate::load::{self, Load};
use crate::report::{HaRatio, Report, Row};
use crate::sections::Section;

/// `section`: [`Section::Checkout`] or [`Section::HaCheckout`], what the rows are labelled.
pub async fn run(bench: &mut Bench, report: &mut Report, section: Section) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    for (clients, ids) in bench.scale.checkout_runs() {
        bench.loaded.orders_unpaid = false;
        let gateway = bench.gateway.clone();
        let orders = EachOnce::new(&ids);
        let load = Load {
            label: format!("{} x{clients}", section.name()),
            clients,
            duration: Some(bench.scale.duration),
        };
        let before = Snapshot::take(&bench.system);
        let stats = load::run(&load, move || {
            let gateway = gateway.clone();
            let path = orders.take().map(|id| format!("/orders/checkout/{id}"));
            async move { Some(gateway.call(Method::POST, &path?).await) }
        })
        .await?;
        let after = Snapshot::take(&bench.system);
        report.add_cpu(CpuCost::between(
            &before,
            &after,
            stats.count(),
            clients,
            stats.elapsed,
            bench.ticks_per_second,
        ));
        let row = Row::load(
            section,
            format!("POST /orders/checkout, orders {}..{}", ids.start, ids.end),
            clients,
            &stats,
        );
        if let Some(note) = exhausted_note(&stats, &ids) {
            report.note(format!("{} x{clients}: {note}", section.name()));
        }
        if let Some(single) = bench.baseline.get(&clients) {
            report.add_ha_ratio(HaRatio::new(clients, single, &row));
        }
        bench.checkout.insert(clients, row.clone());
        report.add(row);
    }
    Ok(())
}
