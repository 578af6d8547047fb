//! The launcher's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while starting, supervising or stopping processes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the system needs was not built (or not installed).
    #[error("binary {name} not found in {dir}: build with {hint}")]
    MissingBinary {
        name: String,
        dir: PathBuf,
        hint: &'static str,
    },
    /// A program could not be started at all.
    #[error("cannot start {name} ({program})")]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor has no process of that name.
    #[error("no supervised process named {0}")]
    UnknownProcess(String),
    /// A second process under a name already in use.
    #[error("a process named {0} is already supervised")]
    DuplicateProcess(String),
    /// The supervisor is shutting down and starts nothing new.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A helper command (initdb, haproxy -c, ...) failed.
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// Something did not become ready in time.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    /// A template placeholder without a value, or the like.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file-system or system-call failure, with what we were doing.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A database call failed.
    #[error("database error on {context}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what we were doing to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
