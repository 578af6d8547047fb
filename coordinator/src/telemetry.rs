//! Metric names of the coordinator (labels stay bounded: outcome, phase, participant, action).

use service_kit::telemetry::{Kind, Metric};

/// Transactions finished, by `outcome` (committed / aborted) and `reason` code.
pub const TRANSACTIONS: &str = "twopc_transactions_total";
/// Duration of protocol steps in seconds, by `phase` (prepare / decision / phase_two) and
/// `participant` (`log` for the decision write).
pub const PHASE_DURATION: &str = "twopc_phase_duration_seconds";
/// Votes received, by `participant` and `vote` (yes / no / error).
pub const VOTES: &str = "twopc_coordinator_votes_total";
/// Decisions per forced log write (group commit).
pub const DECISION_BATCH: &str = "twopc_decision_batch_size";
/// Recovery actions, by `action` (commit / rollback / finish / already_committed / hazard).
pub const RECOVERY_ACTIONS: &str = "twopc_recovery_actions_total";
/// Hazards detected (a logged commit whose branch is gone without a marker).
pub const HAZARDS: &str = "twopc_hazards_total";
/// Prepared branches of this coordinator seen by the last recovery round, by `participant`.
pub const IN_DOUBT: &str = "twopc_in_doubt_branches";
/// Age in seconds of the oldest prepared branch seen by the last recovery round.
pub const IN_DOUBT_OLDEST: &str = "twopc_in_doubt_oldest_age_seconds";
/// Transactions currently being run by this process.
pub const IN_FLIGHT: &str = "twopc_in_flight_transactions";
/// Abort records written to fence off a transaction whose coordinator could not be asked.
pub const FENCES: &str = "twopc_fences_total";
/// Recovery rounds, by `result` (ok / error / skipped).
pub const RECOVERY_ROUNDS: &str = "twopc_recovery_rounds_total";

/// Every metric of the coordinator, for `/metrics`' `# HELP` lines.
pub const METRICS: &[Metric] = &[
    Metric {
        name: TRANSACTIONS,
        kind: Kind::Counter,
        help: "Transactions finished, by outcome and reason code.",
    },
    Metric {
        name: PHASE_DURATION,
        kind: Kind::Histogram,
        help: "Seconds per protocol step, by phase (prepare, decision, phase_two) and participant (log for the decision write).",
    },
    Metric {
        name: VOTES,
        kind: Kind::Counter,
        help: "Votes received by the coordinator, by participant and vote (yes, no, error).",
    },
    Metric {
        name: DECISION_BATCH,
        kind: Kind::Histogram,
        help: "Decisions per forced log write (group commit).",
    },
    Metric {
        name: RECOVERY_ACTIONS,
        kind: Kind::Counter,
        help: "Recovery actions, by action (commit, rollback, finish, already_committed, hazard).",
    },
    Metric {
        name: HAZARDS,
        kind: Kind::Counter,
        help: "Hazards detected: a logged commit whose branch is gone without a marker, or an aborted one found committed.",
    },
    Metric {
        name: IN_DOUBT,
        kind: Kind::Gauge,
        help: "Prepared branches of this coordinator seen by the last recovery round, by participant.",
    },
    Metric {
        name: IN_DOUBT_OLDEST,
        kind: Kind::Gauge,
        help: "Age in seconds of the oldest prepared branch seen by the last recovery round.",
    },
    Metric {
        name: IN_FLIGHT,
        kind: Kind::Gauge,
        help: "Transactions being run by this process.",
    },
    Metric {
        name: FENCES,
        kind: Kind::Counter,
        help: "Abort records written to fence off a transaction whose coordinator could not be asked.",
    },
    Metric {
        name: RECOVERY_ROUNDS,
        kind: Kind::Counter,
        help: "Recovery rounds, by result (ok, error, skipped).",
    },
];

/// Exports the counters of rare events as 0 before their first event, so dashboards and
/// alerts can take `rate()`/`increase()` of them from start-up, and describes every metric.
/// Called once at start-up.
pub fn register() {
    use service_kit::telemetry::register_counters;
    service_kit::telemetry::describe(METRICS);
    register_counters(
        TRANSACTIONS,
        &[
            &[("outcome", "committed")],
            &[("outcome", "rejected")],
            &[("outcome", "failed")],
            &[("outcome", "pending")],
        ],
    );
    register_counters(
        RECOVERY_ACTIONS,
        &[
            &[("action", "commit")],
            &[("action", "rollback")],
            &[("action", "finish")],
            &[("action", "hazard")],
        ],
    );
    register_counters(HAZARDS, &[&[]]);
    register_counters(FENCES, &[&[]]);
}

/// Counts what recovery did to `count` branches or records (`commit`, `rollback`, `finish`,
/// `hazard`).
pub fn count_recovery_actions(action: &'static str, count: u64) {
    metrics::counter!(RECOVERY_ACTIONS, "action" => action).increment(count);
}
