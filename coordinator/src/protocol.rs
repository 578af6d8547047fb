//! Running one global transaction: presumed-abort two-phase commit.
//!
//! 1. Branches are prepared **one after another, in the order the request lists them**. The
//!    order service lists `order`, `payment`, then `stock`, and each participant locks its rows
//!    in sorted key order, so every checkout acquires its locks in one global order and no cycle
//!    of waits can form across databases (a prepared branch's locks are invisible to
//!    PostgreSQL's own deadlock detector). Preparing them in parallel would be faster for a
//!    lone checkout but deadlocks under the consistency test's hot item. A branch whose locks
//!    no other transaction can want (marked `concurrent`: the `order` branch, which locks only
//!    the orders its transaction claimed) cannot close such a cycle, so it is prepared
//!    alongside the others.
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
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
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
    concurrent: bool,
}

/// A branch's part in phase one.
enum Step {
    Voted(Vote),
    /// No vote arrived: the branch may be prepared, or become prepared until the deadline.
    Unreachable(Refusal),
    /// The deadline passed before the branch's turn came; it was not asked.
    OutOfTime,
}

/// Phase one: every branch prepared, or the refusal that aborts and the branches that may be
/// prepared by then. Two lanes run at once: the branches in the global lock order, one after
/// another, and the `concurrent` ones. A lane stops at its first refusal or once the other
/// lane has one. Of several refusals the one of the branch listed first is the answer, as if
/// every branch had been prepared in turn.
async fn phase_one<'p>(
    app: &App,
    plan: &'p [PlannedBranch],
    deadline: Deadline,
) -> (Vec<(&'p PlannedBranch, Settled)>, Option<(String, Refusal)>) {
    let refused = AtomicBool::new(false);
    let lane = |concurrent: bool| {
        let refused = &refused;
        async move {
            let mut steps = Vec::new();
            let branches = plan
                .iter()
                .enumerate()
                .filter(|(_, b)| b.concurrent == concurrent);
            for (turn, (index, branch)) in branches.enumerate() {
                if refused.load(Ordering::Acquire) {
                    break;
                }
                if deadline.has_passed() {
                    refused.store(true, Ordering::Release);
                    steps.push((index, Step::OutOfTime));
                    break;
                }
                let step = match prepare(app, branch, deadline).await {
                    Ok(vote) => Step::Voted(vote),
                    Err(unreachable) => Step::Unreachable(unreachable),
                };
                let yes = matches!(step, Step::Voted(Vote::Yes));
                steps.push((index, step));
                if !yes {
                    refused.store(true, Ordering::Release);
                    break;
                }
                if turn == 0 && !concurrent {
                    failpoint::hit(failpoint::AFTER_FIRST_PREPARE);
                }
            }
            steps
        }
    };
    let (mut steps, side) = tokio::join!(lane(false), lane(true));
    steps.extend(side);
    steps.sort_by_key(|(index, _)| *index);

    let mut prepared = Vec::with_capacity(plan.len());
    let mut refusal = None;
    for (index, step) in steps {
        let branch = &plan[index];
        let no = match step {
            Step::Voted(Vote::Yes) => {
                prepared.push((branch, Settled::Now));
                continue;
            }
            Step::Voted(Vote::No(no)) => (branch.participant.name.clone(), no),
            Step::Unreachable(unreachable) => {
                prepared.push((branch, Settled::After(deadline.plus(SETTLE))));
                (branch.participant.name.clone(), unreachable)
            }
            Step::OutOfTime => ("coordinator".to_owned(), out_of_time()),
        };
        refusal.get_or_insert(no);
    }
    (prepared, refusal)
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

    let (prepared, refusal) = phase_one(app, &plan, deadline).await;

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
            concurrent: branch.concurrent,
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
    let unreachable = |detail: String| {
        tracing::warn!(participant = %name, %detail, "no vote");
        Refusal::transient("unavailable", format!("{name} could not vote, try again"))
    };
    let instances = &participant.instances;
    let order = instances.order();
    if order.is_empty() {
        return Err(unreachable("no instance to ask".to_owned()));
    }
    // A request that failed without an answer (a refused or reset connection: a dead
    // instance, or a keep-alive connection the other side was closing) is sent again with the
    // same gid, to the next instance, while time is left: a repeated prepare of a prepared
    // branch votes yes without doing the work twice (marked `repeat`, so the participant looks
    // for it first). Only a wait that ran out is not repeated: the participant is slow, and
    // more load would not help it.
    let mut pause = Duration::from_millis(20);
    let mut attempt = 0;
    let response = loop {
        let Some(left) = body.deadline.remaining() else {
            return Err(unreachable("no answer before the deadline".to_owned()));
        };
        let index = order[attempt % order.len()];
        let url = instances
            .url(index)
            .join(twopc::wire::routes::PREPARE)
            .map_err(|error| unreachable(error.to_string()))?;
        match app
            .http
            .post(url)
            .timeout(left + VOTE_MARGIN)
            .json(&body)
            .send()
            .await
        {
            Ok(response) => break response,
            Err(error) if error.is_timeout() => {
                instances.mark_down(index);
                return Err(unreachable(error.to_string()));
            }
            Err(error) => {
                tracing::debug!(participant = %name, %error, "prepare not delivered; retrying");
                if error.is_connect() {
                    instances.mark_down(index);
                }
                body.repeat = true;
                attempt += 1;
                // Another instance is asked at once; the same one again only after a pause.
                if attempt % order.len() == 0 {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
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
