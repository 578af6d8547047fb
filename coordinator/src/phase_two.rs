//! Phase two: finishing every branch of a decided transaction in its participant's own
//! database (`COMMIT PREPARED` / `ROLLBACK PREPARED`), in parallel, each retried until
//! PostgreSQL gives a final answer. The protocol runs it for its own decisions; a status
//! question runs it for a logged commit whose coordinator may be gone.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use twopc::{
    finish::{self, CommitResult, RollbackResult},
    wire::Outcome,
    Deadline, Gid,
};
use uuid::Uuid;

use crate::{failpoint, hazard, participants::ParticipantDb, telemetry, App};

/// Longest wait for one `COMMIT PREPARED` / `ROLLBACK PREPARED` before it is retried. Long
/// enough for a synchronous standby's acknowledgement during a failover.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

/// When a branch's state is final for phase two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// It voted (or it is a commit): what the database says now is final.
    Now,
    /// Its vote never arrived: it may become prepared until this moment, so "not prepared"
    /// before then is not final and the rollback is repeated.
    After(Deadline),
}

/// Phase two. Waits until `reply_by` for every branch that can be finished now; whatever is
/// left keeps running in the background and the transaction stays in flight (recovery leaves
/// it alone) until done. A branch whose vote never arrived ([`Settled::After`]) is not waited
/// for: a duplicate of its prepare may still land until its deadline has settled, so its
/// rollback cannot be final before then, and an abort is true at once anyway (a branch that
/// is rolled back later changes nothing a read sees). The outcome is remembered for status
/// questions when the transaction ends. True if those branches were finished by `reply_by`.
pub(crate) async fn finish(
    app: &App,
    txid: Uuid,
    decision: Decision,
    branches: Vec<(Arc<ParticipantDb>, Gid, Settled)>,
    outcome: Outcome,
    reply_by: Deadline,
) -> bool {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let app_clone = app.clone();
    app.tasks.spawn(async move {
        let started = Instant::now();
        let mut waited_for = branches
            .iter()
            .filter(|(_, _, settled)| *settled == Settled::Now)
            .count();
        let mut done_tx = Some(done_tx);
        let mut tasks = JoinSet::new();
        for (participant, gid, settled) in branches {
            let app = app_clone.clone();
            tasks.spawn(async move {
                let finished = finish_branch(&app, &participant, &gid, decision, settled).await;
                (settled == Settled::Now, finished)
            });
        }
        let mut all_committed = true;
        let mut first = true;
        loop {
            if waited_for == 0 {
                if let Some(done) = done_tx.take() {
                    let _ = done.send(());
                }
            }
            let Some(result) = tasks.join_next().await else {
                break;
            };
            if decision == Decision::Commit && first {
                failpoint::hit(failpoint::MID_PHASE_TWO);
                first = false;
            }
            all_committed &= matches!(result, Ok((_, true)));
            if matches!(result, Ok((true, _))) {
                waited_for -= 1;
            }
        }
        metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "phase_two", "participant" => "all")
            .record(started.elapsed().as_secs_f64());
        if decision == Decision::Commit && all_committed {
            app_clone.log.finish(txid);
        }
        app_clone.inflight.end(txid, outcome);
        if let Some(done) = done_tx.take() {
            let _ = done.send(());
        }
    });
    let wait = reply_by.remaining().unwrap_or_default();
    let finished = tokio::time::timeout(wait, done_rx).await.is_ok();
    if !finished {
        tracing::warn!(%txid, ?decision, "phase two still running; handed to the background");
    }
    finished
}

/// Finishes the branches of a logged commit decision (a status question about a transaction
/// whose coordinator may be gone), waiting up to `limit`; true if all were finished. Safe
/// beside the coordinator's own phase two: a branch committed twice answers "already
/// committed" through its marker.
pub async fn finish_decided(app: &App, decision: &crate::log::Decision, limit: Duration) -> bool {
    let mut tasks = JoinSet::new();
    for name in &decision.participants {
        let (Some(participant), Ok(gid)) = (
            app.participants.get(name).cloned(),
            Gid::new(&decision.coordinator, decision.txid, name),
        ) else {
            continue;
        };
        let app = app.clone();
        tasks.spawn(async move {
            finish_branch(&app, &participant, &gid, Decision::Commit, Settled::Now).await
        });
    }
    let all = async { while tasks.join_next().await.is_some() {} };
    let finished = tokio::time::timeout(limit, all).await.is_ok();
    if !finished {
        tracing::warn!(txid = %decision.txid, "branches of a decided transaction not finished yet");
    }
    finished
}

/// Finishes one branch, retrying until PostgreSQL gives a final answer. Returns true when the
/// branch is known committed (commit) or gone (abort).
async fn finish_branch(
    app: &App,
    participant: &ParticipantDb,
    gid: &Gid,
    decision: Decision,
    settled: Settled,
) -> bool {
    if decision == Decision::Commit {
        failpoint::hold(failpoint::HOLD_BRANCH_COMMIT, failpoint::BRANCH_COMMIT_HOLD).await;
    }
    let started = Instant::now();
    let mut backoff = Duration::from_millis(20);
    let result = loop {
        let step = async {
            match decision {
                Decision::Commit => {
                    finish::commit_prepared(&participant.pool, gid)
                        .await
                        .map(|r| match r {
                            CommitResult::Committed | CommitResult::AlreadyCommitted => Some(true),
                            CommitResult::Lost => Some(false),
                            CommitResult::Busy => None,
                        })
                }
                Decision::Abort => {
                    finish::rollback_prepared(&participant.pool, gid)
                        .await
                        .map(|r| match r {
                            // A duplicate of the lost prepare request may still be running
                            // somewhere: not final until it can no longer prepare.
                            RollbackResult::RolledBack | RollbackResult::NotPrepared
                                if matches!(settled, Settled::After(at) if !at.has_passed()) =>
                            {
                                None
                            }
                            RollbackResult::RolledBack | RollbackResult::NotPrepared => Some(true),
                            RollbackResult::WasCommitted => Some(false),
                            RollbackResult::Busy => None,
                        })
                }
            }
        };
        // A connection that stops answering (a proxy that keeps a dead peer's socket open, a
        // failover caught mid-statement) must not hold a transaction in flight forever: the
        // step is abandoned and retried on a fresh connection. Retrying is safe: a repeat of
        // a step that did run answers "busy" or, through the marker, "already committed".
        match tokio::time::timeout(STEP_TIMEOUT, step).await {
            Ok(Ok(Some(done))) => break done,
            Ok(Ok(None)) => tracing::debug!(%gid, "branch busy or not settled; retrying"),
            Ok(Err(error)) => {
                service_kit::db::note_broken(&error);
                tracing::warn!(%gid, %error, "phase two failed; retrying");
            }
            Err(_) => tracing::warn!(%gid, "phase two step timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        // An unsettled branch is looked at often: if it does get prepared, it holds its rows
        // until this loop rolls it back.
        let cap = match settled {
            Settled::After(at) if !at.has_passed() => Duration::from_millis(100),
            _ => Duration::from_secs(2),
        };
        backoff = (backoff * 2).min(cap);
    };
    metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "phase_two", "participant" => participant.name.clone())
        .record(started.elapsed().as_secs_f64());
    if !result {
        match decision {
            Decision::Commit => hazard::commit_lost(app.log.pool(), gid).await,
            Decision::Abort => hazard::abort_contradicted(gid),
        }
    }
    result
}
