//! Fault injection: what the fault tests and the benchmark do to a running [`System`], each a
//! real signal to a real process, by its supervised name (`coordinator-1`, `gateway-2`,
//! `pg-stock`, ...):
//!
//! - [`System::kill`]: SIGKILL to the process group, a crash; the supervisor restarts it
//!   ([`System::wait_restarted`] waits for the new process);
//! - [`System::pause`] / [`System::resume`]: SIGSTOP / SIGCONT to the process group, a
//!   process that hangs with its sockets, connections and locks held;
//! - [`System::keep_down`] / [`System::bring_back`]: a crash that stays down (restarts
//!   paused) until started again, like `docker stop` and `docker start` later;
//! - [`System::kill_postmaster`]: SIGKILL to a database's postmaster alone (single-instance
//!   mode), the way PostgreSQL crashes: its backends notice and exit, the supervisor restarts
//!   it, and PostgreSQL runs crash recovery;
//! - [`System::kill_primary`], [`System::failover`]: a Patroni primary lost (high-availability
//!   mode).
//!
//! Every wait has a deadline and polls without blocking the caller's async runtime (the
//! load the fault is injected into runs on it).

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::error::{Error, Result};
use crate::supervisor::Target;
use crate::system::{Databases, Service, System};
use crate::unix::{self, Signal};

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(10);

/// What [`System::failover`] measured.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The node that was primary and was killed.
    pub killed: String,
    /// The node that took over.
    pub new_primary: String,
    /// From the SIGKILL to the first write through the database's HAProxy frontend that
    /// succeeded.
    pub write_unavailable: Duration,
    /// From the SIGKILL until the killed node, started again once the new primary wrote,
    /// followed it as a standby.
    pub rejoined_after: Duration,
}

impl System {
    /// SIGKILL to `name`'s process group: a crash. The supervisor starts it again (after
    /// its backoff, 100 ms for a process that ran a while). Returns the killed pid, if it ran.
    pub fn kill(&self, name: &str) -> Result<Option<u32>> {
        self.supervisor().kill(name)
    }

    /// Waits until `name` runs as a process other than `old` (restarted after a kill), at
    /// most `limit`; returns the new pid.
    pub async fn wait_restarted(&self, name: &str, old: u32, limit: Duration) -> Result<u32> {
        let pid = self
            .wait_pid(name, limit, "to run again", |pid| {
                pid.is_some_and(|pid| pid != old)
            })
            .await?;
        pid.ok_or_else(|| Error::UnknownProcess(name.to_owned()))
    }

    /// SIGSTOP to `name`'s process group: every process of it freezes where it is (the
    /// kernel keeps its connections open, nothing answers). Returns once the process is
    /// stopped; the supervisor does not see a stopped process as exited.
    pub async fn pause(&self, name: &str) -> Result<u32> {
        let pid = self
            .supervisor()
            .signal(name, Signal::Stop, Target::Group)?
            .ok_or_else(|| Error::Config(format!("{name} is not running")))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while unix::process_state(pid).is_some_and(|state| state != 'T') {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{name} (pid {pid}) to stop"),
                    seconds: 5,
                });
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(pid)
    }

    /// SIGCONT to `name`'s process group after [`System::pause`].
    pub fn resume(&self, name: &str) -> Result<()> {
        self.supervisor()
            .signal(name, Signal::Cont, Target::Group)
            .map(drop)
    }

    /// A crash that stays down: restarts paused, SIGKILL to the process group, and a wait
    /// (at most `limit`) until the process is gone. [`System::bring_back`] starts it again.
    pub async fn keep_down(&self, name: &str, limit: Duration) -> Result<()> {
        self.supervisor().pause_restarts(name)?;
        self.supervisor().kill(name)?;
        self.wait_pid(name, limit, "to be down", |pid| pid.is_none())
            .await
            .map(drop)
    }

    /// Starts a process kept down ([`System::keep_down`], [`System::stop`]) again and resumes
    /// restarting it; returns once it runs (at most `limit`), with its pid.
    pub async fn bring_back(&self, name: &str, limit: Duration) -> Result<u32> {
        self.supervisor().start(name)?;
        let pid = self
            .wait_pid(name, limit, "to run", |pid| pid.is_some())
            .await?;
        pid.ok_or_else(|| Error::UnknownProcess(name.to_owned()))
    }

    /// SIGKILL to the postmaster of `service`'s database alone (single-instance mode): its
    /// backends see the postmaster die and exit, the supervisor clears what is left of the
    /// group and restarts it, and PostgreSQL recovers from its WAL (prepared transactions
    /// included). Returns the killed pid.
    pub fn kill_postmaster(&self, service: Service) -> Result<u32> {
        if !matches!(self.config().databases, Databases::Single) {
            return Err(Error::Config(
                "kill_postmaster is for single-instance databases; with Patroni use kill_node"
                    .into(),
            ));
        }
        let name = service.postgres_process();
        self.supervisor()
            .signal(&name, Signal::Kill, Target::Leader)?
            .ok_or_else(|| Error::Config(format!("{name} is not running")))
    }

    /// Stops a process gracefully (its stop signal) and keeps it down.
    pub fn stop(&self, name: &str) -> Result<()> {
        self.supervisor().stop(name)
    }

    /// Starts a stopped process again (returns at once; see [`System::bring_back`]).
    pub fn start_process(&self, name: &str) -> Result<()> {
        self.supervisor().start(name)
    }

    /// Loses the primary node of `service`'s database, as a machine loss would: SIGKILL to
    /// its Patroni and to its postmaster (which Patroni runs in a session of its own). The
    /// node stays down until [`System::start_process`] with the returned name.
    pub async fn kill_primary(&self, service: Service) -> Result<String> {
        let name = self.primary(service).await?.ok_or_else(|| {
            Error::Config(format!(
                "database {} has no running primary",
                service.name()
            ))
        })?;
        self.kill_node(&name)?;
        Ok(name)
    }

    /// SIGKILL to Patroni node `name` and its postmaster; it stays down until
    /// [`System::start_process`].
    pub fn kill_node(&self, name: &str) -> Result<()> {
        let node = self
            .patroni
            .values()
            .flatten()
            .find(|node| node.name() == name)
            .ok_or_else(|| Error::UnknownProcess(name.to_owned()))?;
        self.supervisor().pause_restarts(name)?;
        self.supervisor().kill(name)?;
        node.kill_postmaster()?;
        Ok(())
    }

    /// Kills `service`'s primary, measures how long writes through its HAProxy frontend fail,
    /// starts the killed node again once the new primary has written, and waits (at most
    /// `timeout` in all) until it follows as a standby.
    pub async fn failover(&self, service: Service, timeout: Duration) -> Result<Failover> {
        let deadline = Instant::now() + timeout;
        let killed = self.kill_primary(service).await?;
        let started = Instant::now();
        while !self.write_probe(service).await {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("a write to database {} after its failover", service.name()),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let write_unavailable = started.elapsed();
        self.start_process(&killed)?;
        let new_primary = self
            .wait_replicated(service, deadline.saturating_duration_since(Instant::now()))
            .await?;
        Ok(Failover {
            killed,
            new_primary,
            write_unavailable,
            rejoined_after: started.elapsed(),
        })
    }

    /// True if one write transaction (it takes a transaction id, so it commits a WAL record
    /// and waits for the synchronous standby, if any) succeeds on `service`'s database now.
    pub async fn write_probe(&self, service: Service) -> bool {
        let url = self.admin_url(service);
        let attempt = async {
            let mut connection = PgConnection::connect(&url).await?;
            sqlx::query("select txid_current()")
                .execute(&mut connection)
                .await?;
            connection.close().await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Ok(()))
        )
    }

    /// Polls `name`'s pid until `done` holds, at most `limit`; returns that pid.
    async fn wait_pid(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        done: impl Fn(Option<u32>) -> bool,
    ) -> Result<Option<u32>> {
        let deadline = Instant::now() + limit;
        loop {
            let pid = self.supervisor().pid(name)?;
            if done(pid) {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{name} {what}"),
                    seconds: limit.as_secs(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
