//! A Patroni node: one PostgreSQL server of a replicated database, run and failed over by
//! Patroni (Debian's `/usr/bin/patroni`) with etcd as its consensus store.
//!
//! Its configuration is rendered from `patroni/patroni.yml.tmpl` (where the settings are
//! explained). Patroni runs as the `postgres` user (initdb refuses root; root's Python cannot
//! import Patroni here) and starts the postmaster itself, in a session of its own: killing
//! Patroni's process group leaves the postmaster running, so losing a node means killing both
//! ([`PatroniNode::kill_postmaster`] after the supervisor's kill of Patroni).
//!
//! Layout of a node directory (owned by `postgres`): `patroni.yml`, `data/` (PGDATA, created
//! by Patroni's initdb or basebackup, with `data/log/postgresql.log`), the Unix socket and
//! `pgpass`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{Error, IoContext, Result};
use crate::haproxy::render_template;
use crate::postgres;
use crate::supervisor::CommandSpec;
pub use crate::topology::NodePorts;
use crate::unix::{self, Signal};

/// The node configuration template, built into the launcher so the binary runs anywhere.
pub const TEMPLATE: &str = include_str!("../../patroni/patroni.yml.tmpl");
/// Where Debian installs Patroni.
pub const BINARY: &str = "/usr/bin/patroni";
/// Overrides [`BINARY`].
pub const BINARY_VAR: &str = "WDM_PATRONI";
/// How long one REST call to Patroni may take.
const REST_TIMEOUT: Duration = Duration::from_secs(2);

/// One node of database `database`'s cluster.
#[derive(Debug, Clone)]
pub struct PatroniNode {
    database: String,
    name: String,
    dir: PathBuf,
    ports: NodePorts,
    owner: Option<(u32, u32)>,
}

impl PatroniNode {
    /// Node `name` of `database`'s cluster, living in `dir` (created by [`Self::configure`]).
    pub fn new(
        database: &str,
        name: &str,
        dir: impl Into<PathBuf>,
        ports: NodePorts,
    ) -> Result<Self> {
        let dir = std::path::absolute(dir.into())
            .context(|| format!("resolving the directory of node {name}"))?;
        Ok(PatroniNode {
            database: database.to_owned(),
            name: name.to_owned(),
            dir,
            ports,
            owner: postgres::os_owner()?,
        })
    }

    /// The node's name in Patroni and in the supervisor (`pg-order-1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database (Patroni scope `wdm-<database>`).
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn ports(&self) -> NodePorts {
        self.ports
    }

    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Base URL of the node's REST API.
    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.rest)
    }

    /// The configuration for a DCS at `etcd`.
    pub fn render(&self, etcd: SocketAddr) -> Result<String> {
        let loopback = |port: u16| format!("127.0.0.1:{port}");
        let mut values = BTreeMap::new();
        values.insert("database", self.database.clone());
        values.insert("name", self.name.clone());
        values.insert("rest_address", loopback(self.ports.rest));
        values.insert("etcd_address", etcd.to_string());
        values.insert("postgres_address", loopback(self.ports.postgres));
        values.insert("data_dir", self.data_dir().to_string_lossy().into_owned());
        values.insert(
            "bin_dir",
            postgres::bin_dir().to_string_lossy().into_owned(),
        );
        values.insert(
            "pgpass",
            self.dir.join("pgpass").to_string_lossy().into_owned(),
        );
        values.insert("socket_dir", self.dir.to_string_lossy().into_owned());
        render_template(TEMPLATE, &values)
    }

    /// Creates the node directory and writes `patroni.yml` (at every start, so that a port
    /// change applies to an existing node too; Patroni keeps the data).
    pub fn configure(&self, etcd: SocketAddr) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        let config = self.config_path();
        std::fs::write(&config, self.render(etcd)?)
            .context(|| format!("writing {}", config.display()))?;
        for path in [&self.dir, &config] {
            postgres::chown(self.owner, path)?;
        }
        Ok(())
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("patroni.yml")
    }

    /// The program to run.
    pub fn binary() -> PathBuf {
        std::env::var_os(BINARY_VAR).map_or_else(|| PathBuf::from(BINARY), PathBuf::from)
    }

    /// Patroni on this node's configuration, as the `postgres` user, in the node directory.
    pub fn command_spec(&self) -> CommandSpec {
        let mut spec = CommandSpec::new(Self::binary())
            .arg(self.config_path())
            .current_dir(&self.dir)
            // Patroni and libpq look for files under HOME; root's is not theirs to read.
            .env("HOME", &self.dir);
        if let Some((uid, gid)) = self.owner {
            spec = spec.user(uid, gid);
        }
        spec
    }

    /// The running postmaster's pid, from `postmaster.pid`, if that process is alive.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        unix::process_alive(pid).then_some(pid)
    }

    /// SIGKILL to the postmaster and its backends (its process group: Patroni starts it in a
    /// session of its own). Returns the killed pid, if one ran.
    pub fn kill_postmaster(&self) -> Result<Option<u32>> {
        let Some(pid) = self.postmaster_pid() else {
            return Ok(None);
        };
        tracing::info!(node = self.name, pid, "killing the postmaster");
        let signalled = if unix::process_group(pid) == Some(pid) {
            unix::signal_group(pid, Signal::Kill)
        } else {
            unix::signal_process(pid, Signal::Kill)
        };
        signalled.context(|| format!("killing the postmaster {pid} of {}", self.name))?;
        Ok(Some(pid))
    }
}

/// A member of a cluster as Patroni's `GET /cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub name: String,
    /// `leader`, `sync_standby` or `replica`.
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `crashed`, ...
    #[serde(default)]
    pub state: String,
}

impl Member {
    /// The primary, up.
    pub fn is_running_leader(&self) -> bool {
        self.role == "leader" && self.state == "running"
    }

    /// A standby that is up and following the leader.
    pub fn is_running_standby(&self) -> bool {
        matches!(self.role.as_str(), "replica" | "sync_standby")
            && matches!(self.state.as_str(), "running" | "streaming")
    }
}

#[derive(Deserialize)]
struct ClusterView {
    members: Vec<Member>,
}

/// The members of the cluster, as the first node of `nodes` that answers sees them (every
/// node answers from the DCS; a dead node simply does not answer).
pub async fn members(nodes: &[PatroniNode]) -> Result<Vec<Member>> {
    let client = rest_client()?;
    let mut last_error = String::from("no node");
    for node in nodes {
        let url = format!("{}/cluster", node.rest_url());
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                match response.json::<ClusterView>().await {
                    Ok(view) => return Ok(view.members),
                    Err(error) => last_error = format!("{url}: {error}"),
                }
            }
            Ok(response) => last_error = format!("{url}: {}", response.status()),
            Err(error) => last_error = format!("{url}: {error}"),
        }
    }
    Err(Error::Config(format!(
        "no Patroni node answered: {last_error}"
    )))
}

/// The name of the running primary, if there is one now.
pub async fn leader(nodes: &[PatroniNode]) -> Result<Option<String>> {
    Ok(members(nodes)
        .await?
        .into_iter()
        .find(Member::is_running_leader)
        .map(|member| member.name))
}

/// Waits until the cluster has a running primary and `standbys` running standbys; returns the
/// primary's name.
pub async fn wait_cluster(
    nodes: &[PatroniNode],
    standbys: usize,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(members) = members(nodes).await {
            let leader = members.iter().find(|m| m.is_running_leader());
            let following = members.iter().filter(|m| m.is_running_standby()).count();
            if let (Some(leader), true) = (leader, following >= standbys) {
                return Ok(leader.name.clone());
            }
        }
        if Instant::now() >= deadline {
            let database = nodes.first().map_or("?", |node| node.database());
            return Err(Error::Timeout {
                what: format!("database {database} to have a primary and {standbys} standby(s)"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rest_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REST_TIMEOUT)
        .build()
        .map_err(|error| Error::Config(format!("building an HTTP client: {error}")))
}

/// Kills whatever postmaster of `nodes` still runs: a Patroni that was SIGKILLed (or whose
/// launcher died) leaves its postmaster behind, in a session of its own. Best effort.
pub fn kill_leftover_postmasters(nodes: &[PatroniNode]) {
    for node in nodes {
        if let Err(error) = node.kill_postmaster() {
            tracing::warn!(node = node.name(), %error, "cannot kill a leftover postmaster");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_renders_for_a_node() {
        let node = PatroniNode::new(
            "stock",
            "pg-stock-1",
            "/tmp/wdm-node",
            NodePorts {
                postgres: 21001,
                rest: 21002,
            },
        )
        .unwrap();
        let text = node.render("127.0.0.1:21003".parse().unwrap()).unwrap();
        assert!(text.contains("scope: wdm-stock"));
        assert!(text.contains("name: pg-stock-1"));
        assert!(text.contains("listen: 127.0.0.1:21002"));
        assert!(text.contains("hosts: 127.0.0.1:21003"));
        assert!(text.contains("synchronous_mode: true"));
        assert!(text.contains("max_prepared_transactions: 256"));
    }

    #[test]
    fn roles_from_the_cluster_view_are_read() {
        let view: ClusterView = serde_json::from_str(
            r#"{"members":[{"name":"a","role":"leader","state":"running","api_url":"x"},
                           {"name":"b","role":"sync_standby","state":"streaming"}]}"#,
        )
        .unwrap();
        assert!(view.members[0].is_running_leader());
        assert!(view.members[1].is_running_standby());
    }
}
