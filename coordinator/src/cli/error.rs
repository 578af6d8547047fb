//! What ends a run early, and the exit statuses every command reports with.

/// Exit status: nothing in doubt, or everything resolved.
pub const EXIT_CLEAN: u8 = 0;
/// Something is left in doubt (or a hazard is open, or the lock was busy).
pub const EXIT_LEFT: u8 = 1;
/// Usage or connection error; nothing was changed.
pub const EXIT_ERROR: u8 = 2;

/// What ends a run early: always reported on stderr with exit status 2 (1 for a busy lock).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the {what} database at {url}: {source}")]
    Connect {
        what: String,
        url: String,
        source: sqlx::Error,
    },
    #[error("{what} database: {source}")]
    Database { what: String, source: sqlx::Error },
    #[error("another recovery is running (the recovery lock is held); try again later")]
    Busy,
}

impl CliError {
    pub(super) fn exit_code(&self) -> u8 {
        match self {
            CliError::Busy => EXIT_LEFT,
            _ => EXIT_ERROR,
        }
    }
}

/// A failed statement on the decision log.
pub(super) fn log_error(source: sqlx::Error) -> CliError {
    CliError::Database {
        what: "decision log".to_owned(),
        source,
    }
}
