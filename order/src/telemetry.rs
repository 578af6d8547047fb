//! Metric names of the order service.

use service_kit::telemetry::{Kind, Metric};

/// Checkouts answered, by `outcome` (committed / already_paid / rejected / failed / unknown /
/// overloaded)
/// and `reason` (the refusal code; a small fixed set).
pub const CHECKOUTS: &str = "checkouts_total";
/// Transactions started again after a transient abort, by `reason` (the refusal code).
pub const CHECKOUT_RETRIES: &str = "checkout_retries_total";
/// Checkout latency in seconds, by `outcome`.
pub const CHECKOUT_DURATION: &str = "checkout_duration_seconds";
/// Checkouts waiting for a place among those in flight (see `admission`).
pub const CHECKOUTS_QUEUED: &str = "checkouts_queued";
/// Time a checkout waited in the admission queue, in seconds.
pub const CHECKOUT_QUEUE_WAIT: &str = "checkout_queue_wait_seconds";
/// Checkouts in each batch sent to a coordinator (one global transaction), see `batch`.
pub const CHECKOUT_BATCH_SIZE: &str = "checkout_batch_size";
/// Looks at the stock of an item lately sold out before a checkout of it, by `result`
/// (short: refused without a transaction / enough / failed), see `stock`.
pub const STOCK_LOOKS: &str = "checkout_stock_looks_total";
/// Votes of the order branch (the one name every participant counts in).
pub use twopc::VOTES_METRIC as VOTES;

/// Every metric of the order service, for `/metrics`' `# HELP` lines.
pub const METRICS: &[Metric] = &[
    Metric {
        name: CHECKOUTS,
        kind: Kind::Counter,
        help: "Checkouts answered, by outcome and reason (the refusal code).",
    },
    Metric {
        name: CHECKOUT_RETRIES,
        kind: Kind::Counter,
        help: "Transactions started again after a transient abort, by reason.",
    },
    Metric {
        name: CHECKOUT_DURATION,
        kind: Kind::Histogram,
        help: "Checkout latency in seconds, by outcome.",
    },
    Metric {
        name: CHECKOUTS_QUEUED,
        kind: Kind::Gauge,
        help: "Checkouts waiting for a place among those in flight.",
    },
    Metric {
        name: CHECKOUT_QUEUE_WAIT,
        kind: Kind::Histogram,
        help: "Seconds a checkout waited in the admission queue.",
    },
    Metric {
        name: CHECKOUT_BATCH_SIZE,
        kind: Kind::Histogram,
        help: "Checkouts in each batch sent to a coordinator as one global transaction.",
    },
    Metric {
        name: STOCK_LOOKS,
        kind: Kind::Counter,
        help: "Looks at the stock of an item lately sold out before a checkout of it, by result.",
    },
    Metric {
        name: VOTES,
        kind: Kind::Counter,
        help: twopc::VOTES_METRIC_HELP,
    },
];

/// Describes every metric and exports the checkout outcomes as 0 before the first checkout, so
/// dashboards and alerts can take `rate()` of them from start-up (the order branch's votes:
/// `prepare::register_votes`).
pub fn register() {
    service_kit::telemetry::describe(METRICS);
    service_kit::telemetry::register_counters(
        CHECKOUTS,
        &[
            &[("outcome", "committed"), ("reason", "none")],
            &[("outcome", "already_paid"), ("reason", "none")],
            &[("outcome", "rejected"), ("reason", "out_of_stock")],
            &[("outcome", "rejected"), ("reason", "insufficient_credit")],
            &[("outcome", "failed"), ("reason", "none")],
            &[("outcome", "unknown"), ("reason", "none")],
            &[("outcome", "overloaded"), ("reason", "none")],
        ],
    );
    service_kit::telemetry::register_counters(
        STOCK_LOOKS,
        &[
            &[("result", "short")],
            &[("result", "enough")],
            &[("result", "failed")],
        ],
    );
}
