//! Carrying a plan out: each branch committed, rolled back (fenced first where it is not
//! the round's own) or reported, and the decisions left with nothing open marked finished.

use std::{collections::HashSet, fmt};

use serde::Serialize;
use twopc::finish::{self, CommitResult, RollbackResult};
use uuid::Uuid;

use super::{Action, Item, LogState, Plan, Recovery, CLI_IDENTITY};
use crate::{hazard, log, participants::ParticipantDb, telemetry};

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
                    telemetry::count_recovery_actions("finish", finish.len() as u64);
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
                hazard::commit_lost(self.log, &item.parsed).await;
                Done::Hazard
            }
            Action::AlreadyCommitted => Done::NothingToDo,
            Action::InFlight | Action::TooYoung | Action::NextRound => {
                applied.left += 1;
                Done::Left
            }
        }
    }

    async fn commit(
        &self,
        participant: &ParticipantDb,
        item: &Item,
        applied: &mut Applied,
    ) -> Done {
        match finish::commit_prepared(&participant.pool, &item.parsed).await {
            Ok(CommitResult::Committed | CommitResult::AlreadyCommitted) => {
                applied.committed += 1;
                telemetry::count_recovery_actions("commit", 1);
                tracing::info!(gid = %item.gid, "recovery committed branch");
                Done::Committed
            }
            Ok(CommitResult::Lost) => {
                applied.hazards += 1;
                hazard::commit_lost(self.log, &item.parsed).await;
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
        participant: &ParticipantDb,
        item: &Item,
        applied: &mut Applied,
    ) -> Done {
        match finish::rollback_prepared(&participant.pool, &item.parsed).await {
            Ok(RollbackResult::RolledBack | RollbackResult::NotPrepared) => {
                applied.rolled_back += 1;
                telemetry::count_recovery_actions("rollback", 1);
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
