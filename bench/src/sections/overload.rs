//! `overload`: closed-loop clients far above capacity, 1,000 and then 3,000 checkouts in
//! flight, each request a checkout of a fresh order or of a random existing one (as the
//! course's Locust stress test does), for twice the phase duration each (20 s by default).
//! Every status is counted, real client timeouts apart from connection errors, and a few
//! separate clients read `GET /orders/find/{id}` meanwhile: what a short route costs while
//! checkouts queue. The last run's throughput is set against fresh checkouts at 64 clients
//! (the `checkout` section's figure if it ran, else a short run of this mix at 64).
//!
//! The overload client has a pool of its own big enough for every worker, and waits
//! [`CLIENT_TIMEOUT`] for an answer: longer than the order service's 20 s checkout budget and
//! the gateway's 60 s server timeout, so a slow answer is counted as what it is, and a
//! timeout is a real one.

use std::time::Duration;

use reqwest::Method;

use super::{random_id, Bench, EachOnce};
use crate::gateway::{Gateway, Requests};
use crate::load::{self, Load, Stats};
use crate::report::{format_millis, OverloadFigures, Report, Row};
use crate::sections::Section;

/// Checkouts in flight, one run each.
const CLIENTS: [usize; 2] = [1_000, 3_000];
/// The reference concurrency of the throughput ratio.
const BASELINE_CLIENTS: usize = 64;
/// Readers of `GET /orders/find` beside the load.
const FIND_CLIENTS: usize = 4;
/// Above the gateway's `timeout client` (65 s), so HAProxy answers before we give up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(70);
/// Idle connections kept by the overload client: more than the largest run's workers.
const POOL: usize = 4_096;

impl OverloadFigures {
    fn new(clients: usize, stats: &Stats, find: &Stats) -> Self {
        let millis =
            |stats: &Stats, fraction| stats.percentile(fraction).map(|d| d.as_secs_f64() * 1e3);
        let status = |code| stats.rejected.get(&code).copied().unwrap_or(0);
        let other_5xx = stats
            .rejected
            .iter()
            .filter(|(code, _)| **code >= 500 && **code != 503)
            .map(|(_, count)| count)
            .sum();
        OverloadFigures {
            clients,
            seconds: stats.elapsed.as_secs_f64(),
            checkouts_per_second: stats.per_second(),
            p50_ms: millis(stats, 0.50),
            p99_ms: millis(stats, 0.99),
            status_200: stats.ok,
            status_400: status(400),
            status_409: status(409),
            status_503: status(503),
            status_5xx: other_5xx,
            status_other: stats.rejected_total()
                - status(400)
                - status(409)
                - status(503)
                - other_5xx,
            connection_errors: stats.failed,
            timeouts: stats.timed_out,
            find_p50_ms: millis(find, 0.50),
            find_p99_ms: millis(find, 0.99),
            find_per_second: find.per_second(),
            find_not_ok: find.count() - find.ok,
            ratio_to_64: None,
        }
    }

    /// E.g. `overload x3000: 212 checkouts/s, p50 3500 ms, p99 9000 ms; 200: 4200, 400: 0, ...`.
    pub fn summary(&self) -> String {
        let millis = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), format_millis);
        let ratio = self.ratio_to_64.map_or_else(String::new, |ratio| {
            format!("; throughput {ratio:.2} of that at {BASELINE_CLIENTS} clients")
        });
        format!(
            "overload x{}: {:.0} checkouts/s, p50 {} ms, p99 {} ms; 200: {}, 400: {}, 409: {}, \
             503: {}, other 5xx: {}, other: {}, connection errors: {}, timeouts: {}; \
             GET /orders/find beside it (x{FIND_CLIENTS}): p50 {} ms, p99 {} ms, \
             {} not ok{ratio}",
            self.clients,
            self.checkouts_per_second,
            millis(self.p50_ms),
            millis(self.p99_ms),
            self.status_200,
            self.status_400,
            self.status_409,
            self.status_503,
            self.status_5xx,
            self.status_other,
            self.connection_errors,
            self.timeouts,
            millis(self.find_p50_ms),
            millis(self.find_p99_ms),
            self.find_not_ok,
        )
    }
}

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_catalog().await?;
    bench.ensure_unpaid_orders().await?;
    bench.loaded.orders_unpaid = false;
    let rows = bench.scale.rows;
    let duration = bench.scale.duration * 2;
    let overload = crate::gateway::with_limits(bench.system.gateway_url(), POOL, CLIENT_TIMEOUT);
    let fresh = EachOnce::new(&(0..rows));

    let baseline = match bench.checkout.get(&BASELINE_CLIENTS) {
        Some(row) => row.per_second,
        None => {
            let label = format!("overload x{BASELINE_CLIENTS} (baseline)");
            let stats = checkouts(
                &overload,
                &fresh,
                rows,
                label,
                BASELINE_CLIENTS,
                duration / 2,
            )
            .await?;
            report.add(Row::load(
                Section::Overload,
                "baseline: POST /orders/checkout, fresh or random".to_owned(),
                BASELINE_CLIENTS,
                &stats,
            ));
            Some(stats.per_second())
        }
    };

    for clients in CLIENTS {
        let finder = crate::gateway::new(bench.system.gateway_url());
        let find_load = Load {
            label: format!("find beside x{clients}"),
            clients: FIND_CLIENTS,
            duration: Some(duration),
        };
        let (stats, find) = tokio::join!(
            checkouts(
                &overload,
                &fresh,
                rows,
                format!("overload x{clients}"),
                clients,
                duration
            ),
            load::run(&find_load, move || {
                let finder = finder.clone();
                let path = format!("/orders/find/{}", random_id(rows));
                async move { Some(finder.call(Method::GET, &path).await) }
            }),
        );
        let (stats, find) = (stats?, find?);
        report.add(Row::load(
            Section::Overload,
            "POST /orders/checkout, fresh or random".to_owned(),
            clients,
            &stats,
        ));
        report.add(Row::load(
            Section::Overload,
            format!("GET /orders/find beside x{clients}"),
            FIND_CLIENTS,
            &find,
        ));
        let mut figures = OverloadFigures::new(clients, &stats, &find);
        if clients == CLIENTS[CLIENTS.len() - 1] {
            figures.ratio_to_64 = baseline
                .filter(|&base| base > 0.0)
                .map(|base| figures.checkouts_per_second / base);
        }
        report.note(figures.summary());
        report.add_overload(figures);
    }
    Ok(())
}

/// Closed-loop checkouts: each worker in turn checks out a fresh order (while there are any)
/// or a random one, half of the time each.
async fn checkouts(
    gateway: &Gateway,
    fresh: &EachOnce,
    rows: i64,
    label: String,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let gateway = gateway.clone();
    let fresh = fresh.clone();
    let load = Load {
        label,
        clients,
        duration: Some(duration),
    };
    load::run(&load, move || {
        let gateway = gateway.clone();
        let id = rand::random_bool(0.5)
            .then(|| fresh.take())
            .flatten()
            .unwrap_or_else(|| random_id(rows));
        async move {
            let outcome = gateway
                .call(Method::POST, &format!("/orders/checkout/{id}"))
                .await;
            Some(outcome)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn every_status_is_counted_once() {
        let stats = Stats {
            elapsed: Duration::from_secs(1),
            latencies: vec![Duration::from_millis(1); 10],
            ok: 3,
            rejected: BTreeMap::from([(400, 1), (409, 1), (503, 1), (500, 1), (502, 1), (429, 1)]),
            failed: 0,
            timed_out: 1,
        };
        let find = Stats {
            elapsed: Duration::from_secs(1),
            latencies: vec![Duration::from_millis(2); 2],
            ok: 1,
            rejected: BTreeMap::from([(503, 1)]),
            failed: 0,
            timed_out: 0,
        };
        let figures = OverloadFigures::new(3000, &stats, &find);
        assert_eq!(
            (
                figures.status_200,
                figures.status_400,
                figures.status_409,
                figures.status_503,
                figures.status_5xx,
                figures.status_other,
                figures.timeouts,
            ),
            (3, 1, 1, 1, 2, 1, 1)
        );
        assert_eq!(figures.find_not_ok, 1);
    }
}
