//! `commit GID` and `rollback GID`: an operator's hand on one branch, and the rules that
//! refuse it where it contradicts the decision log or a live coordinator may still decide.

use twopc::{
    finish::{self, CommitResult, RollbackResult},
    Gid,
};

use super::args::Force;
use super::connect::Databases;
use super::error::{log_error, CliError, EXIT_CLEAN, EXIT_LEFT};
use crate::{
    log,
    recovery::{self, Action, Item, LogState},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ManualAction {
    Commit,
    Rollback,
}

impl ManualAction {
    fn name(self) -> &'static str {
        match self {
            ManualAction::Commit => "commit",
            ManualAction::Rollback => "rollback",
        }
    }
}

/// Why the decision log (or a live coordinator) stands against a manual action; `None` when
/// the action agrees with what recovery itself would do.
fn objection(action: ManualAction, item: &Item) -> Option<String> {
    match (action, item.log, item.action) {
        (_, _, Action::InFlight) => Some("the transaction is in flight".to_owned()),
        (ManualAction::Rollback, LogState::Commit | LogState::Finished, _) => Some(format!(
            "the decision log has a commit for transaction {}; rolling back contradicts it",
            item.txid
        )),
        (ManualAction::Commit, LogState::NoRecord, _) => Some(format!(
            "the decision log has no commit for transaction {} (presumed abort); committing contradicts it",
            item.txid
        )),
        (ManualAction::Rollback, LogState::NoRecord, Action::TooYoung | Action::NextRound) => {
            Some("the branch is younger than the grace period; a coordinator may still be deciding it".to_owned())
        }
        _ => None,
    }
}

/// Runs `action` on the branch `request` names, under the recovery lock, and records it in
/// `operator_actions` when it changed something.
pub(super) async fn force_one(
    databases: &Databases,
    action: ManualAction,
    request: Force,
) -> Result<u8, CliError> {
    let gid = Gid::parse(&request.gid)
        .map_err(|error| CliError::Usage(format!("malformed gid {:?}: {error}", request.gid)))?;
    let Some(participant) = databases.participants.get(gid.participant()) else {
        return Err(CliError::Usage(format!(
            "gid {gid} belongs to participant {:?}, which is not configured",
            gid.participant()
        )));
    };
    let guard = databases.lock().await?;
    let recovery = databases.recovery(Some(gid.coordinator()), request.grace)?;
    let plan = recovery.plan().await.map_err(log_error)?;
    let Some(item) = plan.items.iter().find(|i| i.gid == gid.to_string()) else {
        return Err(CliError::Usage(format!(
            "gid {gid} is not in doubt on participant {} (unknown, or already finished)",
            gid.participant()
        )));
    };
    if item.prepared_at.is_none() {
        return Err(CliError::Usage(format!(
            "gid {gid} is not prepared on participant {} ({}); see `wdm-recovery hazards`",
            gid.participant(),
            item.action
        )));
    }
    let objection = objection(action, item);
    if let Some(objection) = &objection {
        if !request.force {
            eprintln!(
                "wdm-recovery: refused to {} {gid}: {objection}. Use --force --reason \"...\" to override.",
                action.name()
            );
            return Ok(EXIT_LEFT);
        }
    }
    let forced = objection.is_some();
    let pool = &participant.pool;
    let participant_error = |source| CliError::Database {
        what: format!("participant {}", gid.participant()),
        source,
    };
    let (result, done) = match action {
        ManualAction::Commit => match finish::commit_prepared(pool, &gid)
            .await
            .map_err(participant_error)?
        {
            CommitResult::Committed => ("committed", true),
            CommitResult::AlreadyCommitted => ("was already committed", false),
            CommitResult::Lost => ("is gone without a marker (hazard)", false),
            CommitResult::Busy => ("is being finished by another session", false),
        },
        // Without a decision, the transaction's coordinator may still log one: fence it off
        // first, and leave the branch alone if a commit got there before the fence.
        ManualAction::Rollback
            if item.log == LogState::NoRecord
                && log::fence(&databases.log, gid.txid(), recovery::CLI_IDENTITY)
                    .await
                    .map_err(log_error)?
                    == log::Fate::Commit =>
        {
            (
                "has a commit decision now (it landed before the fence); not rolled back",
                false,
            )
        }
        ManualAction::Rollback => match finish::rollback_prepared(pool, &gid)
            .await
            .map_err(participant_error)?
        {
            RollbackResult::RolledBack => ("rolled back", true),
            RollbackResult::NotPrepared => ("was not prepared", false),
            RollbackResult::WasCommitted => ("was already committed", false),
            RollbackResult::Busy => ("is being finished by another session", false),
        },
    };
    if done {
        log::record_operator_action(
            &databases.log,
            &gid.to_string(),
            action.name(),
            forced,
            request.reason.as_deref(),
        )
        .await
        .map_err(log_error)?;
    }
    guard.rollback().await.map_err(log_error)?;
    println!("{gid} {result}{}", if forced { " (forced)" } else { "" });
    Ok(if done { EXIT_CLEAN } else { EXIT_LEFT })
}
