//! Reaching the databases: the decision log and every participant's, each checked before
//! anything changes, and the recovery lock a changing run holds.

use std::time::Duration;

use launcher::{Instances, Ports, Service};
use sqlx::{postgres::PgPoolOptions, ConnectOptions, PgPool, Postgres, Transaction};

use super::args::Cli;
use super::error::{log_error, CliError};
use crate::{
    config::ParticipantSpec,
    participants::Participants,
    recovery::{self, Recovery},
};

/// How long a run waits for another holder of the recovery lock.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The open databases of one run.
pub(super) struct Databases {
    pub(super) log: PgPool,
    pub(super) participants: Participants,
}

/// Opens every database and checks it answers, so a bad URL fails before anything changes.
pub(super) async fn connect(cli: &Cli) -> Result<Databases, CliError> {
    let (log_url, specs) = match (cli.database_url.as_deref(), cli.participants.is_empty()) {
        (None, true) => local_system()?,
        (None, false) => {
            return Err(CliError::Usage(
                "no decision log: give --database-url or set DATABASE_URL".to_owned(),
            ))
        }
        (Some(_), true) => return Err(CliError::Usage(
            "no participants: give --participant NAME,DATABASE_URL or set COORDINATOR_PARTICIPANTS"
                .to_owned(),
        )),
        (Some(log_url), false) => (
            log_url.to_owned(),
            cli.participants.iter().map(|p| p.0.clone()).collect(),
        ),
    };
    let log = open("decision log", &log_url).await?;
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

/// The databases of the system `scripts/up` runs on this machine (its data in `.data/`), in
/// the launcher's fixed layout, for a run given neither a decision log nor participants; says
/// on stderr which databases it looks at.
fn local_system() -> Result<(String, Vec<ParticipantSpec>), CliError> {
    let ports = Ports::fixed(Instances::default());
    let log_url = ports.database_url(Service::Coordinator);
    let specs = Service::PARTICIPANTS
        .into_iter()
        .map(|service| {
            ParticipantSpec::without_vote_endpoint(service.name(), &ports.database_url(service))
                .map_err(CliError::Usage)
        })
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "wdm-recovery: no --database-url or --participant given; looking at the local system of \
         scripts/up (data in .data/):"
    );
    eprintln!("  decision log: {}", redact(&log_url));
    for spec in &specs {
        eprintln!(
            "  participant {}: {}",
            spec.name,
            redact(&spec.database_url)
        );
    }
    Ok((log_url, specs))
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
    /// Recovery as the CLI runs it: no identity of its own, `coordinator`'s transactions (or
    /// every coordinator's).
    pub(super) fn recovery<'a>(
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
    pub(super) async fn lock(&self) -> Result<Transaction<'static, Postgres>, CliError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact("postgres://u@h:1/db"), "postgres://u@h:1/db");
    }
}
