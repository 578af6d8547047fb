//! A branch that contradicts its transaction's decision: the one outcome 2PC cannot repair
//! by itself. It is never guessed around: it is logged, counted, and (for a logged commit)
//! recorded in the decision log's `hazards` table for the operators.

use sqlx::PgPool;
use twopc::Gid;

use crate::{log, telemetry};

/// A logged commit's branch is neither prepared nor committed: its work is lost.
pub async fn commit_lost(log: &PgPool, gid: &Gid) {
    tracing::error!(%gid, "HAZARD: a logged commit's branch is neither prepared nor committed");
    metrics::counter!(telemetry::HAZARDS).increment(1);
    telemetry::count_recovery_actions("hazard", 1);
    if let Err(error) = log::record_hazard(log, gid).await {
        tracing::error!(%gid, %error, "could not record hazard");
    }
}

/// A branch of an aborted transaction was found committed.
pub fn abort_contradicted(gid: &Gid) {
    tracing::error!(%gid, "branch of an aborted transaction was found committed");
    metrics::counter!(telemetry::HAZARDS).increment(1);
}
