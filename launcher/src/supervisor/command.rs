//! How to start a supervised child.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::unix::Signal;

/// Runs before every start of a child, in the supervisor (e.g. clearing a stale lock file).
pub type BeforeStart = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// How to start a child: program, arguments, environment, user, and how to stop it.
#[derive(Clone)]
pub struct CommandSpec {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) env: Vec<(OsString, OsString)>,
    pub(super) current_dir: Option<PathBuf>,
    pub(super) user: Option<(u32, u32)>,
    pub(super) stop_signal: Signal,
    pub(super) before_start: Option<BeforeStart>,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field("current_dir", &self.current_dir)
            .field("user", &self.user)
            .field("stop_signal", &self.stop_signal)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    /// A command running `program`, stopped with SIGTERM.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            user: None,
            stop_signal: Signal::Term,
            before_start: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the rest of the environment is inherited).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Runs the child as `uid`/`gid` (set by the kernel before exec, so the pid we hold is the
    /// program's own: no `su` in between to absorb signals).
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// The signal that asks this program to stop (SIGTERM unless set).
    pub fn stop_signal(mut self, signal: Signal) -> Self {
        self.stop_signal = signal;
        self
    }

    /// A hook run before every start.
    pub fn before_start(mut self, hook: BeforeStart) -> Self {
        self.before_start = Some(hook);
        self
    }

    /// The program this command runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// A `Command` for this spec, without the supervisor's process group and output handling.
    pub fn to_command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        command
    }
}
