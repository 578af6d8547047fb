//! One supervised child: its state, and the thread that starts, reaps and restarts it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    error_chain, lock, CommandSpec, BACKOFF_RESET_AFTER, GROUP_EXIT_WAIT, MAX_BACKOFF, MIN_BACKOFF,
};
use crate::error::{Error, IoContext, Result};
use crate::unix::{self, Signal};

pub(super) struct Slot {
    pub(super) name: String,
    pub(super) spec: CommandSpec,
    pub(super) log_path: PathBuf,
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) pid: Option<u32>,
    /// False while stopped: the child is not restarted.
    pub(super) enabled: bool,
    pub(super) shutting_down: bool,
    pub(super) restarts: u64,
    pub(super) last_exit: Option<ExitStatus>,
    /// Environment set or removed on top of the spec, from the next start on.
    pub(super) env_overrides: BTreeMap<OsString, Option<OsString>>,
}

impl Slot {
    /// Starts the process; called with the state locked so that no stop or kill can slip in
    /// between the decision to start and the pid becoming visible.
    pub(super) fn start(&self, state: &mut State) -> Result<Child> {
        let spawn_error = |source| Error::Spawn {
            name: self.name.clone(),
            program: self.spec.program.clone(),
            source,
        };
        if let Some(hook) = &self.spec.before_start {
            hook().map_err(spawn_error)?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context(|| format!("opening {}", self.log_path.display()))?;
        // The marker line helps reading a log that spans restarts; losing it is harmless.
        let _ = writeln!(
            log,
            "--- starting {} (restart {}) ---",
            self.spec.program.display(),
            state.restarts
        );
        let stderr = log
            .try_clone()
            .context(|| format!("opening {}", self.log_path.display()))?;
        let mut command = self.spec.to_command();
        for (key, value) in &state.env_overrides {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0);
        let parent = unix::current_pid();
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid); it allocates nothing on success.
        unsafe {
            command.pre_exec(move || unix::die_with_parent(parent));
        }
        let child = command.spawn().map_err(spawn_error)?;
        state.pid = Some(child.id());
        self.changed.notify_all();
        Ok(child)
    }

    /// The loop of the child's thread: wait for an exit, restart, until shutdown.
    pub(super) fn supervise(&self, mut child: Child) {
        let mut backoff = MIN_BACKOFF;
        let mut started = Instant::now();
        loop {
            let status = self.reap(&mut child);
            if started.elapsed() >= BACKOFF_RESET_AFTER {
                backoff = MIN_BACKOFF;
            }
            let mut state = lock(&self.state);
            state.last_exit = status;
            let crashed = state.enabled && !state.shutting_down;
            if crashed {
                let status = status.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                tracing::warn!("restarting {} ({status})", self.name);
            }
            if crashed {
                state = self.wait_while(state, Instant::now() + backoff, |s| {
                    s.enabled && !s.shutting_down
                });
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            loop {
                state = self.wait_while(state, far_future(), |s| !s.enabled && !s.shutting_down);
                if state.shutting_down {
                    return;
                }
                match self.start(&mut state) {
                    Ok(next) => {
                        if crashed {
                            state.restarts += 1;
                        }
                        tracing::info!(name = self.name, pid = next.id(), "started");
                        child = next;
                        started = Instant::now();
                        break;
                    }
                    Err(error) => {
                        tracing::error!(
                            name = self.name,
                            error = %error_chain(&error),
                            "start failed, retrying"
                        );
                        state =
                            self.wait_while(state, Instant::now() + backoff, |s| !s.shutting_down);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Waits for the child to exit, clears up what is left of its group, then reaps it. The
    /// pid stays published (and reserved, as a zombie) until the group is gone, so that a
    /// concurrent `kill` never signals a recycled pid.
    fn reap(&self, child: &mut Child) -> Option<ExitStatus> {
        let pid = child.id();
        if let Err(error) = unix::wait_exit_keep_zombie(pid) {
            tracing::error!(name = self.name, %error, "waitid failed");
        }
        // Orphans (a killed postmaster's backends) would hold the data directory or the port.
        if let Err(error) = unix::signal_group(pid, Signal::Kill) {
            tracing::warn!(name = self.name, %error, "cannot kill leftover processes");
        }
        unix::wait_group_gone(pid, GROUP_EXIT_WAIT);
        let mut state = lock(&self.state);
        let status = match child.wait() {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::error!(name = self.name, %error, "wait failed");
                None
            }
        };
        state.pid = None;
        self.changed.notify_all();
        status
    }

    /// Waits on the condition variable while `condition` holds, until `deadline`.
    pub(super) fn wait_while<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        deadline: Instant,
        condition: impl Fn(&State) -> bool,
    ) -> MutexGuard<'a, State> {
        while condition(&state) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(60 * 60 * 24 * 365)
}
