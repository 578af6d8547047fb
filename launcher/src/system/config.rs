//! What a system is started with: where its data and binaries are, its ports, its databases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::topology::{Databases, Instances, Ports};

/// Overrides where the service binaries are looked up (tests: `target/debug`).
pub const BIN_DIR_VAR: &str = "WDM_BIN_DIR";

/// What [`System::start`] needs.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Data, logs and rendered configuration go here (`.data/` for `scripts/up`).
    pub base_dir: PathBuf,
    /// Where `wdm-order`, `wdm-stock`, `wdm-payment` and `wdm-coordinator` are.
    pub bin_dir: PathBuf,
    pub ports: Ports,
    /// How long start-up may take before it is declared failed.
    pub ready_timeout: Duration,
    /// One server per database, or Patroni clusters.
    pub databases: Databases,
}

impl SystemConfig {
    /// The `scripts/up` system: fixed ports, two instances of each service.
    pub fn fixed(base_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        SystemConfig {
            base_dir: base_dir.into(),
            bin_dir: bin_dir.into(),
            ports: Ports::fixed(Instances::default()),
            ready_timeout: Duration::from_secs(90),
            databases: Databases::Single,
        }
    }

    /// The same system with `databases`.
    pub fn with_databases(self, databases: Databases) -> Self {
        SystemConfig { databases, ..self }
    }

    /// A private system on free ports.
    pub fn with_free_ports(
        base_dir: impl Into<PathBuf>,
        bin_dir: impl Into<PathBuf>,
        instances: Instances,
    ) -> Result<Self> {
        Ok(SystemConfig {
            ports: Ports::free(instances)?,
            ..SystemConfig::fixed(base_dir, bin_dir)
        })
    }

    /// Where tests find the service binaries: `$WDM_BIN_DIR`, else the cargo profile
    /// directory the running test binary was built in (`target/debug/deps/..` -> `target/debug`).
    pub fn default_bin_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        dir
    }

    pub(super) fn logs_dir(&self) -> PathBuf {
        self.base_dir.join("logs")
    }
}
