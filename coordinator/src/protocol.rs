//! Running one global transaction: presumed-abort two-phase commit.
//!
//! 1. Branches are prepared **one after another, in the order the request lists them**. The
//!    order service always lists `order`, then `payment`, then `stock`, and each participant
//!    locks its rows in sorted key order, so every checkout acquires its locks in one global
//!    order and no cycle of waits can form across databases (a prepared branch's locks are
//!    invisible to PostgreSQL's own deadlock detector). Preparing in parallel would be faster
//!    for a lone checkout but deadlocks under the consistency test's hot item.
//! 2. Any no vote, error or timeout decides ABORT; nothing is logged for it.
//! 3. All yes: the COMMIT decision is forced to the log (group commit). That write is the
//!    commit point. A phase one that took longer than `max_phase_one` (45 s by default) aborts
//!    instead, so a branch without a decision that is older than that bound is never decided
//!    later: the recovery CLI, which cannot see this process's in-flight set, relies on it
//!    for its grace period.
//! 4. Phase two finishes every branch directly in its participant's database, in parallel,
//!    retrying until done. The caller gets its answer when phase two is done or after
//!    `phase_two_wait`, when the still-running task (and recovery) own the rest.

use std::{sync::Arc, time::Instant};

use tokio::task::JoinSet;
use twopc::{
    finish::{self, CommitResult, RollbackResult},
    wire::{BranchRequest, Outcome, PrepareRequest, Refusal, TransactionRequest, Vote},
    Gid,
};
use uuid::Uuid;

use crate::{failpoint, inflight::Start, participants::Participant, telemetry, App};

/// A request the coordinator cannot run at all (4xx for the caller).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("a transaction needs at least one branch")]
    NoBranches,
    #[error("unknown participant {0:?}")]
    UnknownParticipant(String),
    #[error("participant {0:?} appears twice")]
    DuplicateParticipant(String),
    #[error("transaction {0} is already running")]
    AlreadyRunning(Uuid),
    #[error("transaction {0} was already reported aborted")]
    AlreadySettled(Uuid),
}

struct PlannedBranch {
    participant: Arc<Participant>,
    gid: Gid,
    work: serde_json::Value,
}

/// Runs a transaction to its outcome.
pub async fn run(app: &App, request: TransactionRequest) -> Result<Outcome, RequestError> {
    let txid = request.txid;
    let plan = plan(app, txid, request.branches)?;
    match app.inflight.start(txid) {
        Start::Started => {}
        Start::AlreadyRunning => return Err(RequestError::AlreadyRunning(txid)),
        Start::AlreadySettled => return Err(RequestError::AlreadySettled(txid)),
    }
    let started = Instant::now();

    // Phase one.
    let mut prepared: Vec<&PlannedBranch> = Vec::with_capacity(plan.len());
    let mut refusal: Option<(String, Refusal)> = None;
    for (index, branch) in plan.iter().enumerate() {
        let vote = prepare(app, branch).await;
        match vote {
            Ok(Vote::Yes) => prepared.push(branch),
            Ok(Vote::No(no)) => {
                refusal = Some((branch.participant.name.clone(), no));
                break;
            }
            Err(unreachable) => {
                // The branch may have prepared before the failure: roll it back too.
                prepared.push(branch);
                refusal = Some((branch.participant.name.clone(), unreachable));
                break;
            }
        }
        if index == 0 {
            failpoint::hit(failpoint::AFTER_FIRST_PREPARE);
        }
    }

    if refusal.is_none() && started.elapsed() > app.config.max_phase_one() {
        tracing::warn!(%txid, elapsed = ?started.elapsed(), "phase one over its bound; abort");
        refusal = Some((
            "coordinator".to_owned(),
            Refusal::transient("timeout", "the transaction took too long, try again"),
        ));
    }

    let outcome = match refusal {
        Some((participant, refusal)) => {
            tracing::debug!(%txid, %participant, code = %refusal.code, "abort");
            let gids = prepared
                .iter()
                .map(|b| (b.participant.clone(), b.gid.clone()))
                .collect();
            finish_in_background(app, txid, Decision::Abort, gids).await;
            Outcome::Aborted {
                participant,
                refusal,
            }
        }
        None => {
            failpoint::hit(failpoint::BEFORE_DECISION);
            let names: Vec<String> = plan.iter().map(|b| b.participant.name.clone()).collect();
            app.log.record_commit(txid, &names).await;
            failpoint::hit(failpoint::AFTER_DECISION);
            let gids = plan
                .iter()
                .map(|b| (b.participant.clone(), b.gid.clone()))
                .collect();
            finish_in_background(app, txid, Decision::Commit, gids).await;
            Outcome::Committed
        }
    };
    let label = match &outcome {
        Outcome::Committed => "committed",
        Outcome::Aborted { refusal, .. } if refusal.business => "rejected",
        Outcome::Aborted { .. } => "failed",
        Outcome::Pending => "pending",
    };
    metrics::counter!(telemetry::TRANSACTIONS, "outcome" => label).increment(1);
    metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "total", "participant" => "all")
        .record(started.elapsed().as_secs_f64());
    Ok(outcome)
}

fn plan(
    app: &App,
    txid: Uuid,
    branches: Vec<BranchRequest>,
) -> Result<Vec<PlannedBranch>, RequestError> {
    if branches.is_empty() {
        return Err(RequestError::NoBranches);
    }
    let mut plan: Vec<PlannedBranch> = Vec::with_capacity(branches.len());
    for branch in branches {
        let participant = app
            .participants
            .get(&branch.participant)
            .ok_or_else(|| RequestError::UnknownParticipant(branch.participant.clone()))?;
        if plan.iter().any(|p| p.participant.name == participant.name) {
            return Err(RequestError::DuplicateParticipant(participant.name.clone()));
        }
        let gid = Gid::new(&app.config.id, txid, &participant.name)
            .map_err(|_| RequestError::UnknownParticipant(branch.participant.clone()))?;
        plan.push(PlannedBranch {
            participant: participant.clone(),
            gid,
            work: branch.work,
        });
    }
    Ok(plan)
}

/// Asks one participant for its vote. `Err` carries the refusal for a participant that could
/// not be asked or did not answer in time (its branch may or may not be prepared).
async fn prepare(app: &App, branch: &PlannedBranch) -> Result<Vote, Refusal> {
    let name = branch.participant.name.as_str();
    let body = PrepareRequest {
        gid: branch.gid.to_string(),
        lock_timeout_ms: app.config.lock_timeout().as_millis() as u64,
        work: branch.work.clone(),
    };
    let started = Instant::now();
    let result = ask(app, &branch.participant, &body).await;
    metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "prepare", "participant" => name.to_owned())
        .record(started.elapsed().as_secs_f64());
    let vote = match &result {
        Ok(Vote::Yes) => "yes",
        Ok(Vote::No(_)) => "no",
        Err(_) => "error",
    };
    metrics::counter!(telemetry::VOTES, "participant" => name.to_owned(), "vote" => vote)
        .increment(1);
    result
}

async fn ask(app: &App, participant: &Participant, body: &PrepareRequest) -> Result<Vote, Refusal> {
    let name = participant.name.as_str();
    let url = participant.prepare_url.as_str();
    let unreachable = |detail: String| {
        tracing::warn!(participant = %name, %detail, "no vote");
        Refusal::transient("unavailable", format!("{name} could not vote, try again"))
    };
    // Only a connection that was never made is retried here; anything sent may have been
    // acted upon, and the gid makes a repeated prepare vote yes without doing the work twice,
    // but a slow participant is better answered with an abort than with more load.
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        match app.http.post(url).json(body).send().await {
            Ok(response) => break response,
            Err(error) if error.is_connect() && attempts < 3 => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempts)).await;
            }
            Err(error) => return Err(unreachable(error.to_string())),
        }
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(unreachable(format!("{status}: {text}")));
    }
    response
        .json::<Vote>()
        .await
        .map_err(|error| unreachable(error.to_string()))
}

/// Longest wait for one `COMMIT PREPARED` / `ROLLBACK PREPARED` before it is retried. Long
/// enough for a synchronous standby's acknowledgement during a failover.
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Abort,
}

/// Phase two. Waits up to `phase_two_wait` for every branch; whatever is left keeps running
/// in the background and the transaction stays in flight (recovery leaves it alone) until done.
async fn finish_in_background(
    app: &App,
    txid: Uuid,
    decision: Decision,
    branches: Vec<(Arc<Participant>, Gid)>,
) {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let app_clone = app.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for (participant, gid) in branches {
            let app = app_clone.clone();
            tasks.spawn(async move { finish_branch(&app, &participant, &gid, decision).await });
        }
        let mut all_committed = true;
        let mut first = true;
        while let Some(result) = tasks.join_next().await {
            if decision == Decision::Commit && first {
                failpoint::hit(failpoint::MID_PHASE_TWO);
                first = false;
            }
            all_committed &= matches!(result, Ok(true));
        }
        metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "phase_two", "participant" => "all")
            .record(started.elapsed().as_secs_f64());
        if decision == Decision::Commit && all_committed {
            app_clone.log.finish(txid);
        }
        app_clone.inflight.end(txid);
        let _ = done_tx.send(());
    });
    if tokio::time::timeout(app.config.phase_two_wait(), done_rx)
        .await
        .is_err()
    {
        tracing::warn!(%txid, ?decision, "phase two still running; handed to the background");
    }
}

/// Finishes one branch, retrying until PostgreSQL gives a final answer. Returns true when the
/// branch is known committed (commit) or gone (abort).
async fn finish_branch(
    app: &App,
    participant: &Participant,
    gid: &Gid,
    decision: Decision,
) -> bool {
    let started = Instant::now();
    let mut backoff = std::time::Duration::from_millis(20);
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
            Ok(Ok(None)) => tracing::debug!(%gid, "branch busy; retrying"),
            Ok(Err(error)) => tracing::warn!(%gid, %error, "phase two failed; retrying"),
            Err(_) => tracing::warn!(%gid, "phase two step timed out; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
    };
    metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "phase_two", "participant" => participant.name.clone())
        .record(started.elapsed().as_secs_f64());
    if !result {
        crate::recovery::report_hazard(app, gid, decision).await;
    }
    result
}
