//! Scratch directories for test systems, removed when dropped.
//!
//! Not `tempfile`: its directories are private to their creator (mode 0700), and PostgreSQL,
//! which runs as the `postgres` user, must be able to reach its data directory inside.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};

/// Set to keep scratch directories after the run, for reading logs and data.
pub const KEEP_VAR: &str = "WDM_KEEP_DATA";

/// A fresh directory under the system's temporary directory, world-traversable.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<tmp>/wdm-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "wdm-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_VAR).is_some() {
            eprintln!("keeping {} ({KEEP_VAR} is set)", self.path.display());
            return;
        }
        // Best effort: a leftover directory in /tmp is not worth failing a test for.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
