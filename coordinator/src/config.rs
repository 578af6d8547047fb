//! Command-line and environment configuration.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use clap::Parser;

/// One participant as the coordinator knows it: its instances, any of which can be asked for
/// a vote, and its database, where phase two and recovery finish branches directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSpec {
    pub name: String,
    /// Base URLs of the participant's instances (or of one proxy in front of them).
    pub base_urls: Vec<reqwest::Url>,
    pub database_url: String,
}

impl FromStr for ParticipantSpec {
    type Err = String;

    /// `NAME,BASE_URL[|BASE_URL...],DATABASE_URL`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ',');
        let (Some(name), Some(base_urls), Some(database_url)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "participant {s:?} is not NAME,BASE_URL[|BASE_URL...],DATABASE_URL"
            ));
        };
        Self::new(name, base_urls.split('|'), database_url)
    }
}

impl ParticipantSpec {
    /// A participant with a valid name and instance URLs.
    pub fn new<'a>(
        name: &str,
        base_urls: impl IntoIterator<Item = &'a str>,
        database_url: &str,
    ) -> Result<Self, String> {
        twopc::gid::validate_name("participant", name).map_err(|e| e.to_string())?;
        let base_urls = base_urls
            .into_iter()
            .map(|url| {
                reqwest::Url::parse(url)
                    .map_err(|error| format!("participant {name}: {url:?} is no URL: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_owned(),
            base_urls,
            database_url: database_url.to_owned(),
        })
    }

    /// A participant known by its database alone, as the recovery CLI knows it: it finishes
    /// branches and never asks for a vote.
    pub fn without_vote_endpoint(name: &str, database_url: &str) -> Result<Self, String> {
        Self::new(name, [], database_url)
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

    /// Participants as NAME,BASE_URL[|BASE_URL...],DATABASE_URL (repeat, or space-separated in
    /// the environment), in the order their branches are prepared. Votes are asked of the
    /// instances directly, spread over those that answer their health probe.
    #[arg(
        long = "participant",
        env = "COORDINATOR_PARTICIPANTS",
        value_delimiter = ' ',
        required = true
    )]
    pub participants: Vec<ParticipantSpec>,

    /// Longest phase one a caller may ask for: a transaction's deadline is moved back to at
    /// most this long after the coordinator received it. It bounds how long a transaction
    /// without a decision can hold its rows: a peer coordinator (or the CLI) may fence off and
    /// roll back another coordinator's undecided branch once it is older than this plus
    /// `twopc::deadline::SETTLE`. Matches the order service's `PHASE_ONE_MS`.
    #[arg(long, env = "MAX_PHASE_ONE_MS", default_value_t = 5_000)]
    pub max_phase_one_ms: u64,

    /// Period of the background recovery rounds.
    /// Short, because a round is also how a stopped peer's branches get finished: they hold
    /// their rows until a round fences them off.
    #[arg(long, env = "RECOVERY_INTERVAL_MS", default_value_t = 1_000)]
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
    pub fn max_phase_one(&self) -> Duration {
        Duration::from_millis(self.max_phase_one_ms)
    }

    /// Age past which another coordinator's branch without a decision is fenced off and
    /// rolled back: no deadline of a transaction started before it can still be ahead.
    pub fn peer_grace(&self) -> Duration {
        self.max_phase_one() + twopc::deadline::SETTLE
    }

    pub fn recovery_interval(&self) -> Duration {
        Duration::from_millis(self.recovery_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_is_name_urls_and_database() {
        let spec: ParticipantSpec = "stock,http://127.0.0.1:8010/,postgres://u@h:1/stock?x=1,2"
            .parse()
            .unwrap();
        assert_eq!(spec.name, "stock");
        assert_eq!(spec.base_urls[0].as_str(), "http://127.0.0.1:8010/");
        assert_eq!(spec.database_url, "postgres://u@h:1/stock?x=1,2");
        let two: ParticipantSpec = "stock,http://a:1|http://b:2/,postgres://y".parse().unwrap();
        let urls: Vec<&str> = two.base_urls.iter().map(reqwest::Url::as_str).collect();
        assert_eq!(urls, ["http://a:1/", "http://b:2/"]);
        assert!("Stock,http://x,postgres://y"
            .parse::<ParticipantSpec>()
            .is_err());
        assert!("stock,http://x".parse::<ParticipantSpec>().is_err());
        assert!("stock,http://a:1|,postgres://y"
            .parse::<ParticipantSpec>()
            .is_err());
    }
}
