//! `wdm-recovery`: the operators' view of in-doubt transactions, and their repair.
//!
//! It talks to the databases directly (the decision log and every participant database), so
//! it works while every service is down. Listing and resolving run the very
//! [`Recovery::plan`](crate::recovery::Recovery::plan) /
//! [`Recovery::apply`](crate::recovery::Recovery::apply) the coordinator runs; everything that
//! changes something holds the recovery lock, so the coordinator's own rounds skip meanwhile
//! and two runs never fight.
//!
//! * [`args`]: the command line;
//! * `connect`: opening the databases, the recovery lock;
//! * `output`: the plan as a table, hazards, JSON;
//! * `manual`: `commit GID` / `rollback GID` and the rules that refuse them;
//! * [`error`]: what ends a run early, and the exit statuses.
//!
//! This module runs the commands; the modules above depend on none of it.

pub mod args;
mod connect;
pub mod error;
mod manual;
mod output;

use std::{process::ExitCode, time::Duration};

use twopc::finish;

pub use args::{Cli, Command, Force, ParticipantArg, DEFAULT_GRACE_SECS};
use connect::{connect, Databases};
use error::log_error;
pub use error::{CliError, EXIT_CLEAN, EXIT_ERROR, EXIT_LEFT};
use manual::{force_one, ManualAction};
use output::{in_doubt, print_json, print_plan, print_unreachable, HazardReport};

use crate::{log, recovery::Action};

/// Parses nothing; runs a parsed command line and returns the process's exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match execute(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("wdm-recovery: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn execute(cli: Cli) -> Result<u8, CliError> {
    let databases = connect(&cli).await?;
    match cli.command {
        Command::List {
            json,
            coordinator,
            grace,
        } => list(&databases, coordinator.as_deref(), grace, json).await,
        Command::Resolve {
            dry_run,
            coordinator,
            grace,
        } => resolve(&databases, coordinator.as_deref(), grace, dry_run).await,
        Command::Commit(force) => force_one(&databases, ManualAction::Commit, force).await,
        Command::Rollback(force) => force_one(&databases, ManualAction::Rollback, force).await,
        Command::Hazards { json } => hazards(&databases, json).await,
        Command::Gc { retention } => gc(&databases, Duration::from_secs(retention)).await,
    }
}

async fn list(
    databases: &Databases,
    coordinator: Option<&str>,
    grace: u64,
    json: bool,
) -> Result<u8, CliError> {
    let recovery = databases.recovery(coordinator, grace)?;
    let plan = recovery.plan().await.map_err(log_error)?;
    if json {
        print_json(&plan)?;
    } else {
        print_plan(&plan);
    }
    Ok(if in_doubt(&plan) {
        EXIT_LEFT
    } else {
        EXIT_CLEAN
    })
}

async fn resolve(
    databases: &Databases,
    coordinator: Option<&str>,
    grace: u64,
    dry_run: bool,
) -> Result<u8, CliError> {
    if dry_run {
        return list(databases, coordinator, grace, false).await;
    }
    let recovery = databases.recovery(coordinator, grace)?;
    let guard = databases.lock().await?;
    let plan = recovery.plan().await.map_err(log_error)?;
    let applied = recovery.apply(&plan).await;
    guard.rollback().await.map_err(log_error)?;
    for result in &applied.results {
        println!("{}  {}  {}", result.gid, result.action, result.result);
    }
    for error in &applied.errors {
        eprintln!("error: {error}");
    }
    print_unreachable(&plan);
    println!(
        "committed {}, rolled back {}, records finished {}, hazards {}, left {}",
        applied.committed,
        applied.rolled_back,
        applied.finished_records,
        applied.hazards,
        applied.left
    );
    Ok(if applied.is_clean() && plan.unreachable.is_empty() {
        EXIT_CLEAN
    } else {
        EXIT_LEFT
    })
}

async fn hazards(databases: &Databases, json: bool) -> Result<u8, CliError> {
    let recorded = log::open_hazards(&databases.log).await.map_err(log_error)?;
    let plan = databases
        .recovery(None, u64::MAX)?
        .plan()
        .await
        .map_err(log_error)?;
    let report = HazardReport {
        recorded,
        found_now: plan
            .items
            .into_iter()
            .filter(|i| i.action == Action::Hazard)
            .collect(),
    };
    if json {
        print_json(&report)?;
    } else {
        report.print();
    }
    Ok(if report.any() { EXIT_LEFT } else { EXIT_CLEAN })
}

async fn gc(databases: &Databases, retention: Duration) -> Result<u8, CliError> {
    let guard = databases.lock().await?;
    let records = log::gc_finished(&databases.log, retention)
        .await
        .map_err(log_error)?;
    println!("decision log: {records} finished record(s) deleted");
    for participant in databases.participants.iter() {
        let markers = finish::gc_markers(&participant.pool, retention)
            .await
            .map_err(|source| CliError::Database {
                what: format!("participant {}", participant.name),
                source,
            })?;
        println!(
            "participant {}: {markers} marker(s) deleted",
            participant.name
        );
    }
    guard.rollback().await.map_err(log_error)?;
    Ok(EXIT_CLEAN)
}
