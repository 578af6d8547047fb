//! `wdm-recovery`: the operators' view of in-doubt transactions, and their repair.
//!
//! It talks to the databases directly (the decision log and every participant database), so
//! it works while every service is down. Listing and resolving run the very
//! [`Recovery::plan`] / [`Recovery::apply`] the coordinator runs; everything that changes
//! something holds the recovery lock, so the coordinator's own rounds skip meanwhile and two
//! runs never fight.

use std::{fmt, process::ExitCode, str::FromStr, time::Duration};

use clap::{Parser, Subcommand};
use sqlx::{postgres::PgPoolOptions, ConnectOptions, PgPool, Postgres, Transaction};
use twopc::{
    finish::{self, CommitResult, RollbackResult},
    Gid,
};

use crate::{
    config::ParticipantSpec,
    log,
    participants::Participants,
    recovery::{self, Action, Item, LogState, Plan, Recovery},
};

/// Exit status: nothing in doubt, or everything resolved.
pub const EXIT_CLEAN: u8 = 0;
/// Something is left in doubt (or a hazard is open, or the lock was busy).
pub const EXIT_LEFT: u8 = 1;
/// Usage or connection error; nothing was changed.
pub const EXIT_ERROR: u8 = 2;

/// How long a run waits for another holder of the recovery lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Default grace for undecided branches. Safety does not depend on it: the CLI fences a
/// transaction off (an abort record no commit decision can overtake) before it rolls a branch
/// back. It keeps the CLI from aborting checkouts that are still running: far above the
/// coordinator's longest phase one (`MAX_PHASE_ONE_MS`, 5 s).
pub const DEFAULT_GRACE_SECS: u64 = 30;

#[derive(Debug, Parser)]
#[command(
    name = "wdm-recovery",
    about = "Inspect and resolve in-doubt two-phase-commit transactions directly in the databases"
)]
pub struct Cli {
    /// The decision log's database (the coordinator's DATABASE_URL).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Participants as NAME,BASE_URL,DATABASE_URL (the coordinator's form; the base URL is
    /// ignored) or NAME,DATABASE_URL. Repeat, or space-separated in the environment.
    #[arg(
        long = "participant",
        env = "COORDINATOR_PARTICIPANTS",
        value_delimiter = ' ',
        global = true,
        hide_env_values = true
    )]
    pub participants: Vec<Participant>,

    /// Go on when a participant database does not answer (a long outage): its branches are
    /// reported as left for later and the exit status is 1. Without it, any unreachable
    /// database stops the run before anything changes (exit 2).
    #[arg(long, global = true)]
    pub skip_unreachable: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every in-doubt branch, what the log says and what recovery would do with it.
    List {
        /// Machine-readable output (the recovery plan as JSON).
        #[arg(long)]
        json: bool,
        /// Only this coordinator's transactions (default: every coordinator's).
        #[arg(long)]
        coordinator: Option<String>,
        /// Branches without a decision younger than this many seconds are left alone.
        #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
        grace: u64,
    },
    /// Applies the decision log to everything in doubt (the coordinator's recovery round).
    Resolve {
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this coordinator's transactions (default: every coordinator's).
        #[arg(long)]
        coordinator: Option<String>,
        /// Branches without a decision younger than this many seconds are left alone: a
        /// live coordinator may still be deciding them (its phase one is bounded at 45 s).
        #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
        grace: u64,
    },
    /// Commits one prepared branch; refused without a commit record unless forced.
    Commit(Force),
    /// Rolls back one prepared branch; refused for a logged commit unless forced.
    Rollback(Force),
    /// Logged commits whose branch is gone without a marker. Exits 1 while any exist.
    Hazards {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Deletes finished decision records and participants' markers older than the retention.
    Gc {
        /// Retention in seconds.
        #[arg(long, default_value_t = 86_400)]
        retention: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct Force {
    /// The branch's gid, as `list` shows it.
    pub gid: String,
    /// Act even where it contradicts the decision log or a live coordinator may still decide.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why; recorded in `operator_actions`.
    #[arg(long)]
    pub reason: Option<String>,
    /// Branches without a decision younger than this many seconds are refused unless forced.
    #[arg(long, default_value_t = DEFAULT_GRACE_SECS)]
    pub grace: u64,
}

/// A participant database. Accepts the coordinator's `NAME,BASE_URL,DATABASE_URL` as well
/// as `NAME,DATABASE_URL`.
#[derive(Debug, Clone)]
pub struct Participant(ParticipantSpec);

impl FromStr for Participant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((name, rest)) = s.split_once(',') {
            if rest.starts_with("postgres://") || rest.starts_with("postgresql://") {
                return format!("{name},-,{rest}").parse().map(Participant);
            }
        }
        s.parse().map(Participant)
    }
}

/// What ends a run early: always reported on stderr with exit status 2 (1 for a busy lock).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the {what} database at {url}: {source}")]
    Connect {
        what: String,
        url: String,
        source: sqlx::Error,
    },
    #[error("{what} database: {source}")]
    Database { what: String, source: sqlx::Error },
    #[error("another recovery is running (the recovery lock is held); try again later")]
    Busy,
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Busy => EXIT_LEFT,
            _ => EXIT_ERROR,
        }
    }
}

fn log_error(source: sqlx::Error) -> CliError {
    CliError::Database {
        what: "decision log".to_owned(),
        source,
    }
}

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

struct Databases {
    log: PgPool,
    participants: Participants,
}

async fn execute(cli: Cli) -> Result<u8, CliError> {
    let databases = connect(&cli).await?;
    match cli.command {
        Command::List {
            json,
            coordinator,
            grace,
        } => {
            let recovery = databases.recovery(coordinator.as_deref(), grace)?;
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

/// Opens every database and checks it answers, so a bad URL fails before anything changes.
async fn connect(cli: &Cli) -> Result<Databases, CliError> {
    let log_url = cli.database_url.as_deref().ok_or_else(|| {
        CliError::Usage("no decision log: give --database-url or set DATABASE_URL".to_owned())
    })?;
    if cli.participants.is_empty() {
        return Err(CliError::Usage(
            "no participants: give --participant NAME,DATABASE_URL or set COORDINATOR_PARTICIPANTS"
                .to_owned(),
        ));
    }
    let log = open("decision log", log_url).await?;
    let specs: Vec<ParticipantSpec> = cli.participants.iter().map(|p| p.0.clone()).collect();
    for spec in &specs {
        match open(&format!("participant {}", spec.name), &spec.database_url).await {
            Ok(pool) => pool.close().await,
            Err(error) if cli.skip_unreachable => {
                eprintln!("warning: {error}; its branches are left for a later run");
            }
            Err(error) => return Err(error),
        }
    }
    let participants = Participants::connect(&specs, 2).map_err(|source| CliError::Connect {
        what: "participant".to_owned(),
        url: String::new(),
        source,
    })?;
    Ok(Databases { log, participants })
}

async fn open(what: &str, url: &str) -> Result<PgPool, CliError> {
    let failed = |source| CliError::Connect {
        what: what.to_owned(),
        url: redact(url),
        source,
    };
    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(failed)?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.disable_statement_logging())
        .await
        .map_err(failed)?;
    Ok(pool)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Databases {
    fn recovery<'a>(
        &'a self,
        coordinator: Option<&'a str>,
        grace: u64,
    ) -> Result<Recovery<'a>, CliError> {
        if let Some(id) = coordinator {
            twopc::gid::validate_name("coordinator", id)
                .map_err(|error| CliError::Usage(error.to_string()))?;
        }
        Ok(Recovery {
            scope: coordinator,
            own: None,
            log: &self.log,
            participants: &self.participants,
            grace: Duration::from_secs(grace),
        })
    }

    /// Takes the recovery lock for the rest of the run (until the returned transaction ends),
    /// waiting a little for another holder.
    async fn lock(&self) -> Result<Transaction<'static, Postgres>, CliError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let mut guard = self.log.begin().await.map_err(log_error)?;
            if recovery::try_lock(&mut guard, None)
                .await
                .map_err(log_error)?
            {
                return Ok(guard);
            }
            drop(guard);
            if tokio::time::Instant::now() >= deadline {
                return Err(CliError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn in_doubt(plan: &Plan) -> bool {
    !plan.items.is_empty() || !plan.unreachable.is_empty()
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::Usage(format!("cannot serialize output: {error}")))?;
    println!("{text}");
    Ok(())
}

struct Age(Option<f64>);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some(s) if s < 120.0 => write!(f, "{s:.0}s"),
            Some(s) if s < 7_200.0 => write!(f, "{:.0}m", s / 60.0),
            Some(s) => write!(f, "{:.1}h", s / 3_600.0),
        }
    }
}

fn marker_text(item: &Item) -> &'static str {
    match item.marker {
        Some(true) => "present",
        Some(false) => "absent",
        None => "-",
    }
}

fn print_plan(plan: &Plan) {
    if plan.items.is_empty() {
        println!("nothing in doubt");
    } else {
        let width = plan.items.iter().map(|i| i.gid.len()).max().unwrap_or(3);
        println!(
            "{:<width$}  {:<12}  {:>6}  {:<9}  {:<7}  ACTION",
            "GID", "PARTICIPANT", "AGE", "LOG", "MARKER"
        );
        for item in &plan.items {
            println!(
                "{:<width$}  {:<12}  {:>6}  {:<9}  {:<7}  {}",
                item.gid,
                item.participant,
                Age(item.age_seconds).to_string(),
                item.log.to_string(),
                marker_text(item),
                item.action
            );
        }
    }
    if !plan.finishable.is_empty() {
        println!(
            "{} decision record(s) only need marking finished",
            plan.finishable.len()
        );
    }
    for name in &plan.unreachable {
        println!("participant {name} could not be listed");
    }
}

async fn resolve(
    databases: &Databases,
    coordinator: Option<&str>,
    grace: u64,
    dry_run: bool,
) -> Result<u8, CliError> {
    let recovery = databases.recovery(coordinator, grace)?;
    if dry_run {
        let plan = recovery.plan().await.map_err(log_error)?;
        print_plan(&plan);
        return Ok(if in_doubt(&plan) {
            EXIT_LEFT
        } else {
            EXIT_CLEAN
        });
    }
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
    for name in &plan.unreachable {
        println!("participant {name} could not be listed");
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManualAction {
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

async fn force_one(
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

#[derive(serde::Serialize)]
struct HazardReport {
    /// Hazards recorded by the coordinator or earlier runs and not resolved.
    recorded: Vec<log::Hazard>,
    /// Hazards a fresh plan finds now (also those not recorded yet).
    found_now: Vec<Item>,
}

async fn hazards(databases: &Databases, json: bool) -> Result<u8, CliError> {
    let recorded = log::open_hazards(&databases.log).await.map_err(log_error)?;
    let plan = databases
        .recovery(None, u64::MAX)?
        .plan()
        .await
        .map_err(log_error)?;
    let found_now: Vec<Item> = plan
        .items
        .into_iter()
        .filter(|i| i.action == Action::Hazard)
        .collect();
    let any = !recorded.is_empty() || !found_now.is_empty();
    if json {
        print_json(&HazardReport {
            recorded,
            found_now,
        })?;
    } else if !any {
        println!("no hazards");
    } else {
        for hazard in &recorded {
            println!(
                "{}  {}  recorded {}",
                hazard.gid,
                hazard.participant,
                hazard.detected_at.to_rfc3339()
            );
        }
        for item in found_now
            .iter()
            .filter(|i| !recorded.iter().any(|h| h.gid == i.gid))
        {
            println!("{}  {}  found now", item.gid, item.participant);
        }
    }
    Ok(if any { EXIT_LEFT } else { EXIT_CLEAN })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_may_be_given_with_or_without_its_base_url() {
        let short: Participant = "stock,postgres://u@h:1/stock?x=1,2".parse().unwrap();
        assert_eq!(short.0.name, "stock");
        assert_eq!(short.0.database_url, "postgres://u@h:1/stock?x=1,2");
        let long: Participant = "stock,http://x:1,postgres://u@h:1/stock".parse().unwrap();
        assert_eq!(long.0.database_url, "postgres://u@h:1/stock");
        assert!("stock".parse::<Participant>().is_err());
    }

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
    }
}
