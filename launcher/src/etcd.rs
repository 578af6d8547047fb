//! etcd, the consensus store the Patroni clusters elect their primaries in (Debian's
//! `etcd-server` package). One single-member etcd on loopback serves every database's cluster;
//! Patroni talks to it through the v3 API (etcd 3.4 has the v2 API off by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::supervisor::CommandSpec;

/// Where Debian installs etcd.
pub const BINARY: &str = "/usr/bin/etcd";
/// Overrides [`BINARY`].
pub const BINARY_VAR: &str = "WDM_ETCD";

/// A single-member etcd in `dir`.
#[derive(Debug, Clone)]
pub struct Etcd {
    pub dir: PathBuf,
    /// Clients (Patroni) connect here.
    pub client: SocketAddr,
    /// The peer port (unused by a single member, but etcd always listens on one).
    pub peer: SocketAddr,
}

impl Etcd {
    /// The program to run.
    pub fn binary() -> PathBuf {
        std::env::var_os(BINARY_VAR).map_or_else(|| PathBuf::from(BINARY), PathBuf::from)
    }

    /// etcd in the foreground, for the supervisor.
    pub fn command_spec(&self) -> CommandSpec {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        CommandSpec::new(Self::binary())
            .arg("--name")
            .arg("wdm")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("wdm={peer}"))
            .arg("--log-level")
            .arg("warn")
    }

    /// Waits until etcd reports itself healthy, at most until `deadline`.
    pub async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|error| Error::Config(format!("building an HTTP client: {error}")))?;
        let url = format!("http://{}/health", self.client);
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success()
                    && response
                        .text()
                        .await
                        .is_ok_and(|body| body.contains("true"))
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("etcd at {url}"),
                    seconds: 0,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
