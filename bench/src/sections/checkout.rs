//! `checkout`: fresh checkouts, every order checked out exactly once, at 16 and 64 clients,
//! each level on its own range of batch-loaded orders.

use super::{exhausted_note, Bench};
use crate::report::{Report, Row};
use crate::sections::Section;

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    for (clients, ids) in bench.scale.checkout_runs() {
        let label = format!("checkout x{clients}");
        let stats = bench
            .checkout_each_once(&label, clients, ids.clone())
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
