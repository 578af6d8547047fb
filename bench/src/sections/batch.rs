//! `batch`: wall time of `batch_init` through the gateway for users, items and orders.

use std::time::Instant;

use super::{BatchPaths, Bench};
use crate::gateway::Requests;
use crate::report::{Report, Row};
use crate::sections::Section;

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    let rows = bench.scale.rows;
    let BatchPaths {
        users,
        items,
        orders,
    } = bench.paths();
    for (what, path) in [("users", users), ("items", items), ("orders", orders)] {
        eprintln!("POST {path}");
        let started = Instant::now();
        bench.gateway.post_ok(&path).await?;
        report.add(Row::timing(
            Section::Batch,
            format!("batch_init {rows} {what}"),
            Some(rows as u64),
            started.elapsed(),
        ));
    }
    bench.loaded.catalog = true;
    bench.loaded.orders = true;
    bench.loaded.orders_unpaid = true;
    Ok(())
}
