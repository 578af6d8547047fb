//! Planning a round: reading P, A, T and Q and giving every in-doubt branch its verdict
//! (the table in the module above). Changes nothing.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;
use twopc::{
    finish::{self, PreparedBranch},
    Gid,
};
use uuid::Uuid;

use super::Recovery;
use crate::log;

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

/// A peer's logged commit is finished by others only once this old: until then its own
/// coordinator is normally in the middle of phase two.
const PEER_COMMIT_GRACE: Duration = Duration::from_secs(2);

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
}

fn age(now: DateTime<Utc>, at: DateTime<Utc>) -> f64 {
    (now - at).num_milliseconds().max(0) as f64 / 1000.0
}
