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
//!    commit point, and it lands only before the transaction's deadline (checked by the log
//!    database itself) and only if nobody fenced the transaction off first.
//! 4. Phase two finishes every branch directly in its participant's database, in parallel,
//!    retrying until done. The caller gets its answer when phase two is done or at its
//!    `reply_by`, when the still-running task (and recovery) own the rest.
//!
//! **Deadlines.** The caller's deadline (moved back to at most `max_phase_one` from now) goes
//! to every participant, which bounds its whole branch by it and cannot prepare after it. The
//! wait for a vote ends shortly after it. A vote that did not arrive leaves its branch maybe
//! prepared: it is rolled back, again and again, until "not prepared" is final
//! (`deadline + SETTLE`), so an abandoned branch holds its rows for moments, not until the next
//! recovery round.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use twopc::{
    deadline::SETTLE,
    wire::{BranchRequest, Outcome, PrepareRequest, Refusal, TransactionRequest, Vote},
    Deadline, Gid,
};
use uuid::Uuid;

use crate::{
    failpoint,
    inflight::Start,
    participants::ParticipantDb,
    phase_two::{finish, Decision, Settled},
    telemetry, App,
};

/// A request the coordinator cannot run at all (4xx for the caller).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("a transaction needs at least one branch")]
    NoBranches,
    #[error("unknown participant {0:?}")]
    UnknownParticipant(String),
    #[error("participant {0:?} appears twice")]
    DuplicateParticipant(String),
}

struct PlannedBranch {
    participant: Arc<ParticipantDb>,
    gid: Gid,
    work: serde_json::Value,
}

/// How long after the deadline a vote may still arrive (the participant's own bound fires at
/// the deadline; this covers the reply's way back).
const VOTE_MARGIN: Duration = Duration::from_secs(1);

/// Runs a transaction to its outcome.
pub async fn run(app: &App, request: TransactionRequest) -> Result<Outcome, RequestError> {
    let txid = request.txid;
    let plan = plan(app, txid, request.branches)?;
    let deadline = request
        .deadline
        .min(Deadline::after(app.config.max_phase_one()));
    // A repeat of a transaction this process finished lately gets the same answer, not a
    // second run.
    if let Some(outcome) = app.inflight.outcome(txid) {
        return Ok(outcome);
    }
    // A repeat of one running now (a caller's duplicate) waits for the first run's outcome,
    // up to the same reply deadline; `pending` after it, and the caller follows by status.
    match app.inflight.start(txid) {
        Start::Started => {}
        Start::AlreadyRunning(running) => {
            let limit = request.reply_by.remaining().unwrap_or_default();
            return Ok(running.outcome(limit).await.unwrap_or(Outcome::Pending));
        }
    }
    let started = Instant::now();

    // Phase one.
    let mut prepared: Vec<(&PlannedBranch, Settled)> = Vec::with_capacity(plan.len());
    let mut refusal: Option<(String, Refusal)> = None;
    for (index, branch) in plan.iter().enumerate() {
        if deadline.has_passed() {
            refusal = Some(("coordinator".to_owned(), out_of_time()));
            break;
        }
        let vote = prepare(app, branch, deadline).await;
        match vote {
            Ok(Vote::Yes) => prepared.push((branch, Settled::Now)),
            Ok(Vote::No(no)) => {
                refusal = Some((branch.participant.name.clone(), no));
                break;
            }
            Err(unreachable) => {
                // The branch may be prepared, or become prepared until the deadline.
                prepared.push((branch, Settled::After(deadline.plus(SETTLE))));
                refusal = Some((branch.participant.name.clone(), unreachable));
                break;
            }
        }
        if index == 0 {
            failpoint::hit(failpoint::AFTER_FIRST_PREPARE);
        }
    }

    let outcome = match refusal {
        Some(refusal) => abort(app, txid, refusal, prepared, request.reply_by).await,
        None => {
            failpoint::hit(failpoint::BEFORE_DECISION);
            let names: Vec<String> = plan.iter().map(|b| b.participant.name.clone()).collect();
            if app.log.record_commit(txid, &names, deadline).await {
                failpoint::hit(failpoint::AFTER_DECISION);
                failpoint::hold(failpoint::HOLD_AFTER_DECISION, failpoint::DECISION_HOLD).await;
                let gids = plan
                    .iter()
                    .map(|b| (b.participant.clone(), b.gid.clone(), Settled::Now))
                    .collect();
                let finished = finish(
                    app,
                    txid,
                    Decision::Commit,
                    gids,
                    Outcome::Committed,
                    request.reply_by,
                )
                .await;
                // Committed means visible: a caller told so may read its writes at once.
                if finished {
                    Outcome::Committed
                } else {
                    Outcome::Committing
                }
            } else {
                let prepared = plan.iter().map(|b| (b, Settled::Now)).collect();
                let refusal = ("coordinator".to_owned(), out_of_time());
                abort(app, txid, refusal, prepared, request.reply_by).await
            }
        }
    };
    let label = match &outcome {
        Outcome::Committed => "committed",
        Outcome::Committing => "committing",
        Outcome::Aborted { refusal, .. } if refusal.business => "rejected",
        Outcome::Aborted { .. } => "failed",
        Outcome::Pending | Outcome::Unknown => "pending",
    };
    metrics::counter!(telemetry::TRANSACTIONS, "outcome" => label).increment(1);
    metrics::histogram!(telemetry::PHASE_DURATION, "phase" => "total", "participant" => "all")
        .record(started.elapsed().as_secs_f64());
    Ok(outcome)
}

fn out_of_time() -> Refusal {
    Refusal::transient("timeout", "the checkout ran out of time, try again")
}

async fn abort(
    app: &App,
    txid: Uuid,
    (participant, refusal): (String, Refusal),
    prepared: Vec<(&PlannedBranch, Settled)>,
    reply_by: Deadline,
) -> Outcome {
    tracing::debug!(%txid, %participant, code = %refusal.code, "abort");
    let outcome = Outcome::Aborted {
        participant,
        refusal,
    };
    let gids = prepared
        .into_iter()
        .map(|(b, settled)| (b.participant.clone(), b.gid.clone(), settled))
        .collect();
    // Aborted is true at once: a branch still to be rolled back changes nothing a read sees.
    app.inflight.decided(txid, outcome.clone());
    finish(app, txid, Decision::Abort, gids, outcome.clone(), reply_by).await;
    outcome
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
async fn prepare(app: &App, branch: &PlannedBranch, deadline: Deadline) -> Result<Vote, Refusal> {
    let name = branch.participant.name.as_str();
    let body = PrepareRequest {
        gid: branch.gid.to_string(),
        deadline,
        work: branch.work.clone(),
        repeat: false,
    };
    let started = Instant::now();
    let result = ask(app, &branch.participant, body).await;
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

async fn ask(
    app: &App,
    participant: &ParticipantDb,
    mut body: PrepareRequest,
) -> Result<Vote, Refusal> {
    let name = participant.name.as_str();
    let url = participant.prepare_url.as_str();
    let unreachable = |detail: String| {
        tracing::warn!(participant = %name, %detail, "no vote");
        Refusal::transient("unavailable", format!("{name} could not vote, try again"))
    };
    // A request that failed without an answer (a refused or reset connection, one closed by a
    // proxy whose server died) is sent again with the same gid while time is left: a repeated
    // prepare of a prepared branch votes yes without doing the work twice (marked `repeat`, so
    // the participant looks for it first). Only a wait that ran out is not repeated: the
    // participant is slow, and more load would not help it.
    let mut pause = Duration::from_millis(20);
    let response = loop {
        let Some(left) = body.deadline.remaining() else {
            return Err(unreachable("no answer before the deadline".to_owned()));
        };
        match app
            .http
            .post(url)
            .timeout(left + VOTE_MARGIN)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => break response,
            Err(error) if error.is_timeout() => return Err(unreachable(error.to_string())),
            Err(error) => {
                tracing::debug!(participant = %name, %error, "prepare not delivered; retrying");
                body.repeat = true;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
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
