//! Recovery of in-doubt branches: one implementation for the coordinator's own rounds (at
//! start-up before serving, then periodically) and for the operators' CLI.
//!
//! A round follows the order of reads that keeps it from racing live transactions:
//! `P` = prepared branches per participant, `A` = transactions this process is running,
//! `T` = unfinished commit decisions, `Q` = prepared branches again. Then
//!
//! | branch                                  | action                                      |
//! |-----------------------------------------|---------------------------------------------|
//! | decision in `T`, txid in `A`            | leave it: the live transaction finishes it  |
//! | decision in `T`, branch in `P` and `Q`  | `COMMIT PREPARED`                           |
//! | decision in `T`, branch in neither      | marker present: already committed; absent: **hazard**, reported, never guessed |
//! | branch only in `Q`                      | prepared after `P` was read: next round      |
//! | in `P` and `Q`, no decision, own, not in `A` | `ROLLBACK PREPARED` (presumed abort)    |
//! | in `P` and `Q`, no decision, another coordinator's (or the CLI's view) | once older than the grace age, or at once if that coordinator is not alive: fence, then roll back (or commit, if the fence finds a commit) |
//! | abort record (fenced)                   | `ROLLBACK PREPARED`                          |
//!
//! A decision whose branches are all committed is marked finished.
//!
//! **Own and peers' branches.** Presumed abort is only sound for the coordinator that holds a
//! transaction's identity lock: nobody else can be about to log its commit. Every round also
//! looks at the other coordinators' branches, so that a coordinator that is stopped or gone
//! for good does not keep its rows locked: a peer's branch without a decision is first
//! *fenced* (an abort record under its txid, which no commit decision can overtake, see
//! `log::fence`), then rolled back; if the fence finds a commit instead, the branch is
//! committed. The grace age keeps rounds from fencing a live peer's transaction: a peer's
//! deadline is at most `max_phase_one` after it started, so older branches are past it. A
//! peer that is not alive (no process holds its identity lock, `log::live_identities`) gets
//! no grace: its branches are fenced at once, so a coordinator that is down holds its rows
//! for one round, not for the grace age. A peer's logged commits are finished once a moment
//! old.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use twopc::{
    finish::{self, CommitResult, PreparedBranch, RollbackResult},
    Gid,
};
use uuid::Uuid;

use crate::{
    inflight::InFlight,
    log,
    participants::{Participant, Participants},
    protocol, telemetry, App,
};

/// What recovery would do (or did) with one branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Logged commit, branch prepared: commit it.
    Commit,
    /// No decision: roll it back (presumed abort).
    Rollback,
    /// Logged commit, branch already committed (marker present): only the record is open.
    AlreadyCommitted,
    /// Logged commit, branch neither prepared nor marked: cannot be honoured.
    Hazard,
    /// The transaction is running in this coordinator right now.
    InFlight,
    /// Younger than the grace age; a live coordinator may still be deciding it.
    TooYoung,
    /// Appeared between the two listings; looked at next round.
    NextRound,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Action::Commit => "commit",
            Action::Rollback => "rollback",
            Action::AlreadyCommitted => "already-committed",
            Action::Hazard => "hazard",
            Action::InFlight => "in-flight",
            Action::TooYoung => "too-young",
            Action::NextRound => "next-round",
        };
        f.write_str(text)
    }
}

/// What the decision log says about a branch's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogState {
    /// An unfinished commit decision.
    Commit,
    /// A commit decision already marked finished, yet a branch of it is still prepared (the
    /// record was finished by hand or by an older version): the branch must still commit.
    Finished,
    /// An abort record: the transaction was fenced off.
    Fenced,
    /// No record: presumed abort (for its own coordinator; anyone else fences first).
    NoRecord,
}

impl fmt::Display for LogState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogState::Commit => "commit",
            LogState::Finished => "finished",
            LogState::Fenced => "fenced",
            LogState::NoRecord => "no-record",
        })
    }
}

/// One in-doubt branch and the verdict on it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub gid: String,
    #[serde(skip)]
    pub parsed: Gid,
    pub txid: Uuid,
    pub participant: String,
    /// When it was prepared; `None` for a branch that is no longer prepared.
    pub prepared_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<f64>,
    pub log: LogState,
    /// Whether the branch's marker row exists (only looked up where it decides something).
    pub marker: Option<bool>,
    pub action: Action,
    /// A rollback that must fence the transaction off first (it is not the live
    /// coordinator's own, so its coordinator may still be about to log a commit).
    pub fence: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
    /// Decisions whose branches are all committed already: only the record needs finishing.
    pub finishable: Vec<Uuid>,
    /// Participants that could not be listed this round.
    pub unreachable: Vec<String>,
}

/// The inputs of a round.
pub struct Recovery<'a> {
    /// Only gids of this coordinator; `None` for every coordinator.
    pub scope: Option<&'a str>,
    /// The live coordinator running this round; `None` outside the coordinator (the CLI).
    pub own: Option<Own<'a>>,
    pub log: &'a PgPool,
    pub participants: &'a Participants,
    /// Branches without a decision that are not `own`'s are left alone until this old.
    pub grace: Duration,
}

/// The coordinator running a round: its identity (whose lock it holds) and its running
/// transactions.
#[derive(Clone, Copy)]
pub struct Own<'a> {
    pub id: &'a str,
    pub in_flight: &'a InFlight,
}

/// A peer's logged commit is finished by others only once this old: until then its own
/// coordinator is normally in the middle of phase two.
const PEER_COMMIT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Serialize)]
pub struct Applied {
    pub committed: usize,
    pub rolled_back: usize,
    pub finished_records: usize,
    pub hazards: usize,
    pub left: usize,
    pub errors: Vec<String>,
    /// What happened to each planned branch, in plan order.
    pub results: Vec<ItemResult>,
}

/// The outcome of one planned branch.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub gid: String,
    pub action: Action,
    /// `committed`, `rolled-back`, `hazard`, `left`, `busy`, `nothing-to-do` or `error: ...`.
    pub result: String,
}

impl Applied {
    /// Nothing is left in doubt and nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.left == 0 && self.hazards == 0 && self.errors.is_empty()
    }
}

impl Recovery<'_> {
    fn prefix(&self) -> String {
        match self.scope {
            Some(id) => Gid::coordinator_prefix(id),
            None => twopc::gid::GID_PREFIX.to_owned(),
        }
    }

    async fn list_all(
        &self,
        unreachable: &mut Vec<String>,
    ) -> HashMap<String, Vec<PreparedBranch>> {
        let prefix = self.prefix();
        let mut listed = HashMap::new();
        for participant in self.participants.iter() {
            match finish::list_prepared(&participant.pool, &prefix).await {
                Ok(branches) => {
                    listed.insert(participant.name.clone(), branches);
                }
                Err(error) => {
                    tracing::warn!(participant = %participant.name, %error, "cannot list prepared branches");
                    if !unreachable.contains(&participant.name) {
                        unreachable.push(participant.name.clone());
                    }
                }
            }
        }
        listed
    }

    /// Reads P, A, T, Q and decides what to do with every branch. Changes nothing.
    pub async fn plan(&self) -> Result<Plan, sqlx::Error> {
        let mut plan = Plan::default();
        let p = self.list_all(&mut plan.unreachable).await;
        let a: HashSet<Uuid> = self
            .own
            .map(|own| own.in_flight.snapshot())
            .unwrap_or_default();
        let own_id = self.own.map(|own| own.id);
        let peer_commit_grace =
            chrono::Duration::from_std(PEER_COMMIT_GRACE).unwrap_or(chrono::Duration::MAX);
        let grace = chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX);
        let t = match self.scope {
            Some(id) => log::unfinished(self.log, id).await?,
            None => log::unfinished_all(self.log).await?,
        };
        let q = self.list_all(&mut plan.unreachable).await;
        let now = Utc::now();

        let gids_of =
            |listing: &HashMap<String, Vec<PreparedBranch>>| -> HashMap<String, DateTime<Utc>> {
                listing
                    .values()
                    .flatten()
                    .map(|b| (b.gid.to_string(), b.prepared_at))
                    .collect()
            };
        let in_p = gids_of(&p);
        let in_q = gids_of(&q);

        // Decided transactions.
        for decision in t.values() {
            let mut all_committed = true;
            for participant in &decision.participants {
                let Ok(gid) = Gid::new(&decision.coordinator, decision.txid, participant) else {
                    continue;
                };
                let text = gid.to_string();
                let prepared_at = in_q.get(&text).copied();
                let ours = own_id == Some(decision.coordinator.as_str());
                let (action, marker) = if ours && a.contains(&decision.txid) {
                    (Action::InFlight, None)
                } else if !ours && own_id.is_some() && now - decision.decided_at < peer_commit_grace
                {
                    (Action::TooYoung, None)
                } else if plan.unreachable.contains(participant) {
                    (Action::NextRound, None)
                } else if in_p.contains_key(&text) && in_q.contains_key(&text) {
                    (Action::Commit, None)
                } else if !in_p.contains_key(&text) && !in_q.contains_key(&text) {
                    let Some(target) = self.participants.get(participant) else {
                        plan.unreachable.push(participant.clone());
                        all_committed = false;
                        continue;
                    };
                    let marker = finish::marker_exists(&target.pool, &gid).await?;
                    if marker {
                        (Action::AlreadyCommitted, Some(true))
                    } else {
                        (Action::Hazard, Some(false))
                    }
                } else {
                    (Action::NextRound, None)
                };
                all_committed &= action == Action::AlreadyCommitted;
                if action != Action::AlreadyCommitted {
                    plan.items.push(Item {
                        gid: text,
                        parsed: gid.clone(),
                        txid: decision.txid,
                        participant: participant.clone(),
                        prepared_at,
                        age_seconds: prepared_at.map(|at| age(now, at)),
                        log: LogState::Commit,
                        marker,
                        action,
                        fence: false,
                    });
                }
            }
            let ours = own_id == Some(decision.coordinator.as_str());
            if all_committed && !(ours && a.contains(&decision.txid)) {
                plan.finishable.push(decision.txid);
            }
        }

        // Branches without an unfinished decision. A record may still exist: finished (by
        // hand), or written after T was read; either way the decision is commit.
        let undecided: Vec<Uuid> = q
            .values()
            .flatten()
            .map(|b| b.gid.txid())
            .filter(|txid| !t.contains_key(txid))
            .collect();
        let late = log::recorded(self.log, &undecided).await?;
        // Peers with undecided branches, and which of them are alive: a dead one's branches
        // need not wait out the grace age, nobody can be deciding them.
        let mut peers: Vec<&str> = q
            .values()
            .flatten()
            .map(|b| b.gid.coordinator())
            .filter(|id| Some(*id) != own_id)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let live = if peers.is_empty() {
            HashSet::new()
        } else {
            log::live_identities(self.log, &peers).await?
        };
        for branch in q.values().flatten() {
            let txid = branch.gid.txid();
            if t.contains_key(&txid) {
                continue;
            }
            let text = branch.gid.to_string();
            let log_state = match late.get(&txid) {
                Some((log::Fate::Commit, true)) => LogState::Finished,
                Some((log::Fate::Commit, false)) => LogState::Commit,
                Some((log::Fate::Abort, _)) => LogState::Fenced,
                None => LogState::NoRecord,
            };
            let ours = own_id == Some(branch.gid.coordinator());
            let mut fence = false;
            let action = if ours && a.contains(&txid) {
                Action::InFlight
            } else if matches!(log_state, LogState::Commit | LogState::Finished) {
                Action::Commit
            } else if log_state == LogState::Fenced {
                Action::Rollback
            } else if !in_p.contains_key(&text) {
                Action::NextRound
            } else if ours {
                Action::Rollback
            } else if now - branch.prepared_at < grace && live.contains(branch.gid.coordinator()) {
                Action::TooYoung
            } else {
                fence = true;
                Action::Rollback
            };
            plan.items.push(Item {
                gid: text,
                parsed: branch.gid.clone(),
                txid,
                participant: branch.gid.participant().to_owned(),
                prepared_at: Some(branch.prepared_at),
                age_seconds: Some(age(now, branch.prepared_at)),
                log: log_state,
                marker: None,
                action,
                fence,
            });
        }
        plan.items.sort_by(|x, y| x.gid.cmp(&y.gid));
        Ok(plan)
    }

    /// Carries a plan out. Errors on single branches are collected, not fatal: the next round
    /// tries again.
    pub async fn apply(&self, plan: &Plan) -> Applied {
        let mut applied = Applied::default();
        let mut blocked: HashSet<Uuid> = HashSet::new();
        for item in &plan.items {
            let result = self.apply_item(item, &mut applied).await;
            if !matches!(result, Done::Committed | Done::NothingToDo) {
                blocked.insert(item.txid);
            }
            applied.results.push(ItemResult {
                gid: item.gid.clone(),
                action: item.action,
                result: result.to_string(),
            });
        }
        // A decision is finished once none of its branches is left open.
        let mut finish: Vec<Uuid> = plan.finishable.clone();
        for item in &plan.items {
            if matches!(item.log, LogState::Commit | LogState::Finished)
                && !blocked.contains(&item.txid)
                && !finish.contains(&item.txid)
            {
                finish.push(item.txid);
            }
        }
        if !finish.is_empty() {
            match log::mark_finished(self.log, &finish).await {
                Ok(()) => {
                    applied.finished_records += finish.len();
                    metrics::counter!(telemetry::RECOVERY_ACTIONS, "action" => "finish")
                        .increment(finish.len() as u64);
                }
                Err(error) => applied.errors.push(format!("finishing records: {error}")),
            }
        }
        applied
    }

    async fn apply_item(&self, item: &Item, applied: &mut Applied) -> Done {
        let Some(participant) = self.participants.get(&item.participant) else {
            applied.left += 1;
            return Done::Left;
        };
        match item.action {
            Action::Rollback if item.fence => {
                let by = self.own.map_or(CLI_IDENTITY, |own| own.id);
                match log::fence(self.log, item.txid, by).await {
                    Ok(log::Fate::Abort) => self.rollback(participant, item, applied).await,
                    Ok(log::Fate::Commit) => self.commit(participant, item, applied).await,
                    Err(error) => {
                        applied
                            .errors
                            .push(format!("{}: fencing: {error}", item.gid));
                        Done::Error(error.to_string())
                    }
                }
            }
            Action::Commit => self.commit(participant, item, applied).await,
            Action::Rollback => self.rollback(participant, item, applied).await,
            Action::Hazard => {
                applied.hazards += 1;
                hazard(self.log, &item.parsed).await;
                Done::Hazard
            }
            Action::AlreadyCommitted => Done::NothingToDo,
            Action::InFlight | Action::TooYoung | Action::NextRound => {
                applied.left += 1;
                Done::Left
            }
        }
    }

    async fn commit(&self, participant: &Participant, item: &Item, applied: &mut Applied) -> Done {
        match finish::commit_prepared(&participant.pool, &item.parsed).await {
            Ok(CommitResult::Committed | CommitResult::AlreadyCommitted) => {
                applied.committed += 1;
                count_action("commit");
                tracing::info!(gid = %item.gid, "recovery committed branch");
                Done::Committed
            }
            Ok(CommitResult::Lost) => {
                applied.hazards += 1;
                hazard(self.log, &item.parsed).await;
                Done::Hazard
            }
            Ok(CommitResult::Busy) => {
                applied.left += 1;
                Done::Busy
            }
            Err(error) => {
                applied.errors.push(format!("{}: {error}", item.gid));
                Done::Error(error.to_string())
            }
        }
    }

    async fn rollback(
        &self,
        participant: &Participant,
        item: &Item,
        applied: &mut Applied,
    ) -> Done {
        match finish::rollback_prepared(&participant.pool, &item.parsed).await {
            Ok(RollbackResult::RolledBack | RollbackResult::NotPrepared) => {
                applied.rolled_back += 1;
                count_action("rollback");
                tracing::info!(gid = %item.gid, fenced = item.fence, "recovery rolled back branch");
                Done::RolledBack
            }
            Ok(RollbackResult::WasCommitted) => {
                tracing::info!(gid = %item.gid, "branch committed meanwhile; nothing to undo");
                Done::NothingToDo
            }
            Ok(RollbackResult::Busy) => {
                applied.left += 1;
                Done::Busy
            }
            Err(error) => {
                applied.errors.push(format!("{}: {error}", item.gid));
                Done::Error(error.to_string())
            }
        }
    }
}

/// Who an abort record written by the operators' CLI names.
pub const CLI_IDENTITY: &str = "wdm-recovery";

/// What [`Recovery::apply`] did with one item.
enum Done {
    Committed,
    RolledBack,
    NothingToDo,
    Hazard,
    Busy,
    Left,
    Error(String),
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Done::Committed => f.write_str("committed"),
            Done::RolledBack => f.write_str("rolled-back"),
            Done::NothingToDo => f.write_str("nothing-to-do"),
            Done::Hazard => f.write_str("hazard"),
            Done::Busy => f.write_str("busy"),
            Done::Left => f.write_str("left"),
            Done::Error(error) => write!(f, "error: {error}"),
        }
    }
}

fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (now - at).num_milliseconds().max(0) as f64 / 1000.0
}

fn count_action(action: &'static str) {
    metrics::counter!(telemetry::RECOVERY_ACTIONS, "action" => action).increment(1);
}

async fn hazard(log: &PgPool, gid: &Gid) {
    tracing::error!(%gid, "HAZARD: a logged commit's branch is neither prepared nor committed");
    metrics::counter!(telemetry::HAZARDS).increment(1);
    count_action("hazard");
    if let Err(error) = log::record_hazard(log, gid).await {
        tracing::error!(%gid, %error, "could not record hazard");
    }
}

/// Phase two met a branch that contradicts the decision.
pub async fn report_hazard(app: &App, gid: &Gid, decision: protocol::Decision) {
    match decision {
        protocol::Decision::Commit => hazard(app.log.pool(), gid).await,
        protocol::Decision::Abort => {
            tracing::error!(%gid, "branch of an aborted transaction was found committed");
            metrics::counter!(telemetry::HAZARDS).increment(1);
        }
    }
}

/// Runs one round for the live coordinator, unless the operators' CLI holds the recovery lock.
pub async fn round(app: &App) -> Result<Option<Applied>, sqlx::Error> {
    service_kit::telemetry::record_pool(app.log.pool(), "coordinator");
    for participant in app.participants.iter() {
        service_kit::telemetry::record_pool(&participant.pool, &participant.name);
    }
    let mut guard = app.log.pool().begin().await?;
    if !try_lock(&mut guard, Some(&app.config.id)).await? {
        metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => "skipped").increment(1);
        return Ok(None);
    }
    let recovery = Recovery {
        scope: None,
        own: Some(Own {
            id: &app.config.id,
            in_flight: &app.inflight,
        }),
        log: app.log.pool(),
        participants: &app.participants,
        grace: app.config.peer_grace(),
    };
    let plan = recovery.plan().await?;
    publish_gauges(&plan, &app.participants, &app.config.id);
    let applied = recovery.apply(&plan).await;
    guard.rollback().await?;
    let result = if applied.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => result).increment(1);
    if applied.committed + applied.rolled_back + applied.hazards > 0 {
        tracing::info!(?applied, "recovery round");
    }
    Ok(Some(applied))
}

/// The recovery lock of one coordinator (`Some(id)`) or of the operators' CLI (`None`): a
/// transaction-level advisory lock, so it is released with the transaction even if its holder
/// is cancelled or dies. It only keeps two rounds of one coordinator from doing the same work
/// twice: every action of a round is safe beside another round's (a repeated commit or
/// rollback answers through the marker, a fence through the log's key), so coordinators do
/// not wait for each other, and a stopped one holding its lock stops nobody else.
pub async fn try_lock(tx: &mut sqlx::PgConnection, id: Option<&str>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext('wdm-recovery'), hashtext($1))")
        .bind(id.unwrap_or(CLI_IDENTITY))
        .fetch_one(tx)
        .await
}

/// The gauges count this coordinator's own branches, so that the coordinators' series add up.
fn publish_gauges(plan: &Plan, participants: &Participants, own: &str) {
    let own_items = || plan.items.iter().filter(|i| i.parsed.coordinator() == own);
    for participant in participants.iter() {
        let count = own_items()
            .filter(|i| i.participant == participant.name && i.prepared_at.is_some())
            .count();
        metrics::gauge!(telemetry::IN_DOUBT, "participant" => participant.name.clone())
            .set(count as f64);
    }
    let oldest = own_items()
        .filter_map(|i| i.age_seconds)
        .fold(0.0_f64, f64::max);
    metrics::gauge!(telemetry::IN_DOUBT_OLDEST).set(oldest);
}
