//! Command-line and environment configuration.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use clap::Parser;

/// One participant as the coordinator knows it: where to ask for its vote, and its database,
/// where phase two and recovery finish branches directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSpec {
    pub name: String,
    pub base_url: String,
    pub database_url: String,
}

impl FromStr for ParticipantSpec {
    type Err = String;

    /// `NAME,BASE_URL,DATABASE_URL`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ',');
        let (Some(name), Some(base_url), Some(database_url)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "participant {s:?} is not NAME,BASE_URL,DATABASE_URL"
            ));
        };
        twopc::gid::validate_name("participant", name).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            database_url: database_url.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Parser)]
#[command(name = "wdm-coordinator", about = "Two-phase-commit coordinator")]
pub struct Config {
    /// Address to serve the internal API on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The decision log's database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// This coordinator's identity, embedded in every gid it creates. A restarted coordinator
    /// must keep its identity to recover its own in-doubt branches; two live coordinators must
    /// never share one (the decision log's identity lock makes the second one wait).
    #[arg(long, env = "COORDINATOR_ID", value_parser = parse_name)]
    pub id: String,

    /// Participants as NAME,BASE_URL,DATABASE_URL (repeat, or space-separated in the
    /// environment).
    #[arg(
        long = "participant",
        env = "COORDINATOR_PARTICIPANTS",
        value_delimiter = ' ',
        required = true
    )]
    pub participants: Vec<ParticipantSpec>,

    /// Longest wait for one participant's vote; past it the transaction aborts. Generous on
    /// purpose: the global lock order rules out deadlocks, so a long wait is a queue on a hot
    /// row (the consistency test's single item with 100 checkouts in flight), which a short
    /// bound would turn into spurious failures. Orphaned locks are cleared by recovery within
    /// seconds, not by this timeout.
    #[arg(long, env = "PREPARE_TIMEOUT_MS", default_value_t = 20_000)]
    pub prepare_timeout_ms: u64,

    /// Longest phase one that may still end in a commit decision: a transaction whose votes
    /// took longer aborts instead. Recovery tools may therefore treat an undecided branch
    /// older than this (plus the decision write) as aborted; `wdm-recovery`'s default grace
    /// (120 s) stays above it.
    #[arg(long, env = "MAX_PHASE_ONE_MS", default_value_t = 45_000)]
    pub max_phase_one_ms: u64,

    /// How long a reply waits for phase two before it is handed to recovery.
    #[arg(long, env = "PHASE_TWO_WAIT_MS", default_value_t = 5_000)]
    pub phase_two_wait_ms: u64,

    /// Period of the background recovery rounds.
    #[arg(long, env = "RECOVERY_INTERVAL_MS", default_value_t = 3_000)]
    pub recovery_interval_ms: u64,

    /// Pool size per participant database and for the log.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

fn parse_name(raw: &str) -> Result<String, String> {
    twopc::gid::validate_name("coordinator", raw).map_err(|e| e.to_string())?;
    Ok(raw.to_owned())
}

impl Config {
    pub fn prepare_timeout(&self) -> Duration {
        Duration::from_millis(self.prepare_timeout_ms)
    }

    /// Participants wait for row locks a little less than the coordinator waits for their
    /// vote, so a lock wait ends in a clean "no" rather than a late prepare that recovery must
    /// roll back.
    pub fn lock_timeout(&self) -> Duration {
        let prepare = self.prepare_timeout();
        prepare
            .saturating_sub(Duration::from_millis(1_500))
            .max(prepare / 2)
    }

    pub fn max_phase_one(&self) -> Duration {
        Duration::from_millis(self.max_phase_one_ms)
    }

    pub fn phase_two_wait(&self) -> Duration {
        Duration::from_millis(self.phase_two_wait_ms)
    }

    pub fn recovery_interval(&self) -> Duration {
        Duration::from_millis(self.recovery_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_is_name_url_and_database() {
        let spec: ParticipantSpec = "stock,http://127.0.0.1:8010/,postgres://u@h:1/stock?x=1,2"
            .parse()
            .unwrap();
        assert_eq!(spec.name, "stock");
        assert_eq!(spec.base_url, "http://127.0.0.1:8010");
        assert_eq!(spec.database_url, "postgres://u@h:1/stock?x=1,2");
        assert!("Stock,http://x,postgres://y"
            .parse::<ParticipantSpec>()
            .is_err());
        assert!("stock,http://x".parse::<ParticipantSpec>().is_err());
    }
}
