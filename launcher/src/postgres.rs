//! A PostgreSQL 15 instance living in one directory: created with `initdb` on first use,
//! configured for two-phase commit, run as the `postgres` user under the supervisor.
//!
//! Layout of the instance directory (owned by `postgres`):
//! `data/` (PGDATA, with our settings in `data/wdm.conf`), the Unix socket, and
//! `data/log/postgresql.log`. The data survives restarts; [`PostgresInstance::reset`] wipes it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::error::{Error, IoContext, Result};
use crate::supervisor::CommandSpec;
use crate::topology::{self, ADMIN_DATABASE};
use crate::unix::{self, Signal};

/// Where Debian installs PostgreSQL 15's server binaries.
pub const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Overrides [`DEBIAN_BIN_DIR`].
pub const BIN_DIR_VAR: &str = "WDM_PG_BIN_DIR";
/// The operating-system user PostgreSQL runs as when we are root (initdb refuses root).
pub const OS_USER: &str = "postgres";
/// The file with our settings, included from `postgresql.conf`.
const CONFIG_FILE: &str = "wdm.conf";

/// One PostgreSQL server: its directory, port and binaries.
#[derive(Debug, Clone)]
pub struct PostgresInstance {
    dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    /// uid and gid to run as; `None` when we are not root and run as ourselves.
    owner: Option<(u32, u32)>,
}

impl PostgresInstance {
    /// An instance in `dir` (created on [`init`](Self::init)) listening on `port`.
    pub fn new(dir: impl Into<PathBuf>, port: u16) -> Result<Self> {
        Ok(PostgresInstance {
            dir: absolute(dir.into())?,
            port,
            bin_dir: bin_dir(),
            owner: os_owner()?,
        })
    }

    /// The instance directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `dbname` as the `postgres` superuser (trust authentication).
    pub fn url(&self, dbname: &str) -> String {
        topology::database_url(self.port, dbname)
    }

    /// Creates the cluster unless the data directory already holds one, then (re)writes our
    /// settings, so that a port change applies to an existing cluster too.
    pub fn init(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        self.chown(&self.dir)?;
        let data = self.data_dir();
        if !data.join("PG_VERSION").exists() {
            tracing::info!(dir = %data.display(), "initdb");
            let mut initdb = self.command("initdb");
            initdb.arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                topology::SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            run(initdb)?;
        }
        self.write_config()
    }

    /// Writes `wdm.conf` and makes sure `postgresql.conf` includes it.
    pub fn write_config(&self) -> Result<()> {
        let data = self.data_dir();
        let mut settings = String::new();
        let pairs: [(&str, String); 16] = [
            ("port", self.port.to_string()),
            ("listen_addresses", quote("127.0.0.1")),
            (
                "unix_socket_directories",
                quote(&self.dir.to_string_lossy()),
            ),
            ("max_connections", "300".into()),
            ("max_prepared_transactions", "256".into()),
            ("shared_buffers", quote("128MB")),
            // Durability is the point of the exercise: a killed database must lose nothing
            // it acknowledged, prepared transactions included.
            ("fsync", "on".into()),
            ("synchronous_commit", "on".into()),
            ("full_page_writes", "on".into()),
            ("logging_collector", "on".into()),
            ("log_directory", quote("log")),
            ("log_filename", quote("postgresql.log")),
            ("log_rotation_age", "0".into()),
            ("log_line_prefix", quote("%m [%p] %q%u@%d ")),
            ("log_min_messages", "warning".into()),
            ("log_timezone", quote("UTC")),
        ];
        settings.push_str("# Written by the launcher (launcher/src/postgres.rs) at every start.\n");
        for (key, value) in pairs {
            // Writing to a String cannot fail.
            let _ = writeln!(settings, "{key} = {value}");
        }
        let config = data.join(CONFIG_FILE);
        std::fs::write(&config, settings).context(|| format!("writing {}", config.display()))?;
        self.chown(&config)?;

        let main = data.join("postgresql.conf");
        let text = std::fs::read_to_string(&main)
            .context(|| format!("reading {} (was initdb run?)", main.display()))?;
        let include = format!("include '{CONFIG_FILE}'");
        if !text.lines().any(|line| line.trim() == include) {
            let text = format!("{text}\n{include}\n");
            std::fs::write(&main, text).context(|| format!("writing {}", main.display()))?;
        }
        Ok(())
    }

    /// The postmaster itself (`postgres -D <data>`), as the `postgres` user, stopped with
    /// SIGINT (fast shutdown: SIGTERM would wait for every client to disconnect).
    pub fn command_spec(&self) -> CommandSpec {
        let mut spec = CommandSpec::new(self.bin_dir.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .current_dir(&self.dir)
            .stop_signal(Signal::Int);
        if let Some((uid, gid)) = self.owner {
            spec = spec.user(uid, gid);
        }
        let data = self.data_dir();
        spec.before_start(Arc::new(move || remove_stale_pid_file(&data)))
    }

    /// Waits until the server accepts connections, at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_accepting(&self.url(ADMIN_DATABASE), timeout).await
    }

    /// Creates database `name` unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        create_database(&self.url(ADMIN_DATABASE), name).await
    }

    /// Deletes the instance directory with all its data (the server must not be running).
    pub fn reset(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).context(|| format!("removing {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut spec = CommandSpec::new(self.bin_dir.join(program)).current_dir(&self.dir);
        if let Some((uid, gid)) = self.owner {
            spec = spec.user(uid, gid);
        }
        spec.to_command()
    }

    fn chown(&self, path: &Path) -> Result<()> {
        chown(self.owner, path)
    }
}

/// The uid and gid PostgreSQL (and Patroni) run as: the `postgres` user when we are root
/// (initdb refuses root), `None` (ourselves) otherwise.
pub fn os_owner() -> Result<Option<(u32, u32)>> {
    if !unix::is_root() {
        return Ok(None);
    }
    unix::lookup_user(OS_USER)
        .context(|| format!("looking up the {OS_USER} user (PostgreSQL cannot run as root)"))
        .map(Some)
}

/// Gives `path` to `owner` (see [`os_owner`]); nothing to do for `None`.
pub fn chown(owner: Option<(u32, u32)>, path: &Path) -> Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .context(|| format!("chown {OS_USER} {}", path.display())),
        None => Ok(()),
    }
}

/// Waits until the server at `url` accepts connections, at most `timeout`.
pub async fn wait_accepting(url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match PgConnection::connect(url).await {
            Ok(connection) => {
                // Closing politely is a courtesy; the server is up either way.
                let _ = connection.close().await;
                return Ok(());
            }
            Err(error) if Instant::now() >= deadline => {
                return Err(Error::Database {
                    context: format!("waiting {} s for {url}", timeout.as_secs()),
                    source: error,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates database `name` on the server of the admin URL `url` unless it exists.
pub async fn create_database(url: &str, name: &str) -> Result<()> {
    let database = |source| Error::Database {
        context: format!("creating database {name} at {url}"),
        source,
    };
    let mut connection = PgConnection::connect(url).await.map_err(database)?;
    let exists: Option<i32> = sqlx::query_scalar("select 1 from pg_database where datname = $1")
        .bind(name)
        .fetch_optional(&mut connection)
        .await
        .map_err(database)?;
    if exists.is_none() {
        let statement = format!("create database \"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(&statement).execute(&mut connection).await {
            Ok(_) => tracing::info!(name, url, "created database"),
            // Someone else created it meanwhile: fine.
            Err(error) if is_duplicate_database(&error) => {}
            Err(error) => return Err(database(error)),
        }
    }
    let _ = connection.close().await;
    Ok(())
}

/// The directory holding `postgres`, `initdb`, `pg_isready`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os(BIN_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEBIAN_BIN_DIR))
}

/// Runs a helper command to completion; its output becomes the error text if it fails.
pub(crate) fn run(mut command: Command) -> Result<String> {
    let description = format!("{:?}", command.get_program());
    let output = command
        .output()
        .context(|| format!("running {description}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(Error::CommandFailed {
            command: description,
            status: output.status,
            output: text,
        })
    }
}

/// A SIGKILLed postmaster leaves `postmaster.pid` behind. PostgreSQL ignores it when the pid is
/// dead, but refuses to start when the pid now belongs to some other process of the same user
/// (another instance's backend, after pid reuse). Our previous postmaster has been reaped when
/// this runs, so a pid that is not a postmaster of this very directory is stale.
fn remove_stale_pid_file(data: &Path) -> std::io::Result<()> {
    let pid_file = data.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    let pid: Option<u32> = text
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok());
    let live_postmaster = pid.is_some_and(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains(data.to_string_lossy().as_ref())
        })
    });
    if !live_postmaster {
        tracing::info!(file = %pid_file.display(), "removing stale postmaster.pid");
        std::fs::remove_file(&pid_file)?;
    }
    Ok(())
}

fn is_duplicate_database(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "42P04")
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn absolute(path: PathBuf) -> Result<PathBuf> {
    std::path::absolute(&path).context(|| format!("resolving {}", path.display()))
}
