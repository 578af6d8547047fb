//! The command line: the databases to look at, the commands and their options.

use std::str::FromStr;

use clap::{Parser, Subcommand};

use crate::config::ParticipantSpec;

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
    pub participants: Vec<ParticipantArg>,

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
pub struct ParticipantArg(pub(super) ParticipantSpec);

impl FromStr for ParticipantArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(',') {
            Some((name, rest)) if is_database_url(rest) => {
                ParticipantSpec::without_vote_endpoint(name, rest).map(ParticipantArg)
            }
            _ => s.parse().map(ParticipantArg),
        }
    }
}

fn is_database_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_may_be_given_with_or_without_its_base_url() {
        let short: ParticipantArg = "stock,postgres://u@h:1/stock?x=1,2".parse().unwrap();
        assert_eq!(short.0.name, "stock");
        assert_eq!(short.0.database_url, "postgres://u@h:1/stock?x=1,2");
        let long: ParticipantArg = "stock,http://x:1,postgres://u@h:1/stock".parse().unwrap();
        assert_eq!(long.0.database_url, "postgres://u@h:1/stock");
        assert!("stock".parse::<ParticipantArg>().is_err());
    }
}
