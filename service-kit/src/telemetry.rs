//! Logs and metrics.
//!
//! Logs go to stderr through `tracing`; `RUST_LOG` overrides the default filter. Metrics are
//! recorded with the `metrics` facade and rendered in the Prometheus text format on each
//! service's `/metrics` route, which the gateway never forwards.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests served, by route template, method and status code.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Request latency in seconds, by route template and method.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";

/// Connections of a database pool, by `pool` (the database it connects to) and `state`
/// (`idle` / `in_use`).
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// The most connections a pool may open, by `pool`.
pub const DB_POOL_MAX: &str = "db_pool_max_connections";
/// How long getting a connection from the pool took, by `pool`: a probe every
/// [`crate::db::WATCH_INTERVAL`], so an exhausted pool or a slow database shows as long waits
/// without timing every query.
pub const DB_POOL_ACQUIRE: &str = "db_pool_acquire_duration_seconds";
/// Probes that got no connection (pool timeout, database down), by `pool`.
pub const DB_POOL_ACQUIRE_ERRORS: &str = "db_pool_acquire_errors_total";
/// The checkout's prepared branches (`PREPARE TRANSACTION`, gid `wdm_...`) waiting in this
/// service's own database, by `database`. Read from `pg_prepared_xacts` by the participant
/// itself, so an operator sees branches left in doubt even while the coordinator is down.
pub const PREPARED_BRANCHES: &str = "twopc_prepared_branches";
/// Age in seconds of the oldest of [`PREPARED_BRANCHES`] (0 when there is none), by `database`.
pub const PREPARED_OLDEST: &str = "twopc_prepared_oldest_age_seconds";

/// What kind of series a metric is: its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric as `/metrics` describes it: its name, its kind and the `# HELP` text. Each crate
/// lists its metrics once in such a table, beside the name constants, and [`describe`]s them
/// at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

/// The metrics every service records through this kit.
pub const METRICS: &[Metric] = &[
    Metric {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        help: "Requests served, by route template, method and status code.",
    },
    Metric {
        name: HTTP_DURATION,
        kind: Kind::Histogram,
        help: "Request latency in seconds, by route template and method.",
    },
    Metric {
        name: DB_POOL_CONNECTIONS,
        kind: Kind::Gauge,
        help: "Connections of a database pool, by pool and state (idle, in_use).",
    },
    Metric {
        name: DB_POOL_MAX,
        kind: Kind::Gauge,
        help: "The most connections a database pool may open, by pool.",
    },
    Metric {
        name: DB_POOL_ACQUIRE,
        kind: Kind::Histogram,
        help: "Seconds a periodic probe waited for a pooled connection, by pool.",
    },
    Metric {
        name: DB_POOL_ACQUIRE_ERRORS,
        kind: Kind::Counter,
        help: "Pool probes that got no connection (pool timeout, database down), by pool.",
    },
    Metric {
        name: PREPARED_BRANCHES,
        kind: Kind::Gauge,
        help: "Prepared checkout branches waiting in this service's database, by database.",
    },
    Metric {
        name: PREPARED_OLDEST,
        kind: Kind::Gauge,
        help: "Age in seconds of the oldest prepared checkout branch (0 when none), by database.",
    },
];

/// Gives each of `metrics` its help text in the global recorder, so `/metrics` carries a
/// `# HELP` line beside each `# TYPE`. Call once at start-up, after [`init_metrics`].
pub fn describe(metrics: &[Metric]) {
    for metric in metrics {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

/// Histogram buckets (seconds) shared by every latency metric of the system.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the log subscriber. Safe to call more than once (tests start many services in one
/// process); later calls are ignored.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // A branch that voted with PREPARE TRANSACTION has already left its transaction block,
        // so the COMMIT that closes sqlx's transaction object draws a harmless notice.
        tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=error")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the global Prometheus recorder, describes the kit's own [`METRICS`], and returns the
/// handle that renders it.
///
/// Only the first call in a process installs a recorder; later calls (several services in one
/// test process) get a handle to a recorder that is not global, which renders nothing new.
pub fn init_metrics() -> PrometheusHandle {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("static bucket list is not empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    describe(METRICS);
    handle
}

/// Axum middleware counting requests and timing them by route template (never by raw path,
/// which carries ids and would make labels unbounded).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Publishes `pool`'s connection counts under the label `pool` = `name` (no I/O).
pub fn record_pool(pool: &sqlx::PgPool, name: &str) {
    let size = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    let label = name.to_owned();
    metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => label.clone(), "state" => "idle").set(idle);
    metrics::gauge!(DB_POOL_CONNECTIONS, "pool" => label.clone(), "state" => "in_use")
        .set((size - idle).max(0.0));
    metrics::gauge!(DB_POOL_MAX, "pool" => label)
        .set(f64::from(pool.options().get_max_connections()));
}

/// Registers the series a service may not touch for a while (counters of rare events), so
/// they are exported as 0 from start-up and `rate()`/`increase()` see their first event.
pub fn register_counters(name: &'static str, label_sets: &[&[(&'static str, &'static str)]]) {
    for labels in label_sets {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(key, value)| metrics::Label::new(*key, *value))
            .collect();
        metrics::counter!(name, labels).increment(0);
    }
}

/// The `/metrics` handler body for a given recorder handle.
pub fn render(handle: &PrometheusHandle) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle.render(),
    )
        .into_response()
}
