//! The supervisor: named child processes restarted whenever they exit, like containers with
//! `restart: always`.
//!
//! Each child runs in its own process group, so [`Supervisor::kill`] hits everything it
//! forked (a postmaster and its backends) the way `docker kill` hits a container. One thread
//! per child waits for it and restarts it with a backoff (100 ms doubling to 2 s, back to
//! 100 ms once a run lasted 10 s). Threads rather than tasks because the supervisor must work,
//! and clean up in `Drop`, whatever async runtime (or none) its owner uses, including while a
//! test unwinds from a panic. Children also get SIGKILL if the launcher itself dies.

mod command;
mod slot;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::unix::{self, Signal};

pub use command::{BeforeStart, CommandSpec};
use slot::{Slot, State};

/// First delay before restarting a child that exited.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The delay doubles up to this after each quick exit.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A run at least this long resets the delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long [`Supervisor::shutdown`] and [`Supervisor::stop`] wait after the stop signal
/// before sending SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long to wait for a killed child's group to empty before starting it again.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(2);

/// What [`Supervisor::signal`] reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The supervised process only (a postmaster, not its backends).
    Leader,
    /// Everything in its process group (everything it forked).
    Group,
}

/// Named child processes kept running. See the module documentation.
pub struct Supervisor {
    logs_dir: PathBuf,
    children: Mutex<BTreeMap<String, Arc<Slot>>>,
    shutting_down: Mutex<bool>,
}

impl Supervisor {
    /// A supervisor appending each child's output to `<logs_dir>/<name>.log`.
    pub fn new(logs_dir: impl Into<PathBuf>) -> Result<Self> {
        let logs_dir = logs_dir.into();
        std::fs::create_dir_all(&logs_dir)
            .context(|| format!("creating log directory {}", logs_dir.display()))?;
        Ok(Supervisor {
            logs_dir,
            children: Mutex::new(BTreeMap::new()),
            shutting_down: Mutex::new(false),
        })
    }

    /// Where the children's output goes.
    pub fn logs_dir(&self) -> &Path {
        &self.logs_dir
    }

    /// The log file of `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }

    /// Starts `spec` under `name` and keeps it running. Fails if the first start fails (a
    /// missing binary should stop the launcher, not loop); later failures are retried.
    pub fn spawn(&self, name: &str, spec: CommandSpec) -> Result<u32> {
        if *lock(&self.shutting_down) {
            return Err(Error::ShuttingDown);
        }
        let mut children = lock(&self.children);
        if children.contains_key(name) {
            return Err(Error::DuplicateProcess(name.to_owned()));
        }
        let slot = Arc::new(Slot {
            name: name.to_owned(),
            spec,
            log_path: self.log_path(name),
            state: Mutex::new(State {
                enabled: true,
                ..State::default()
            }),
            changed: Condvar::new(),
            thread: Mutex::new(None),
        });
        // The child is started by its own thread, not the caller's: the parent-death signal
        // fires when the forking *thread* ends, and a caller's thread (a blocking-pool thread,
        // a test thread) may end long before the supervisor does.
        let (started, first_start) = std::sync::mpsc::sync_channel(1);
        let monitor = Arc::clone(&slot);
        let handle = std::thread::Builder::new()
            .name(format!("supervise-{name}"))
            .spawn(move || {
                let child = monitor.start(&mut lock(&monitor.state));
                match child {
                    Ok(child) => {
                        let _ = started.send(Ok(child.id()));
                        monitor.supervise(child);
                    }
                    Err(error) => {
                        let _ = started.send(Err(error));
                    }
                }
            })
            .context(|| format!("starting the supervisor thread of {name}"))?;
        let pid = match first_start.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(error)) => {
                let _ = handle.join();
                return Err(error);
            }
            Err(_) => {
                let _ = handle.join();
                return Err(Error::Config(format!(
                    "the supervisor thread of {name} died"
                )));
            }
        };
        tracing::info!(name, pid, "started");
        *lock(&slot.thread) = Some(handle);
        children.insert(name.to_owned(), slot);
        Ok(pid)
    }

    /// The names of all supervised processes, sorted.
    pub fn names(&self) -> Vec<String> {
        lock(&self.children).keys().cloned().collect()
    }

    /// The pid of `name`'s current process (also its process group id), if it runs.
    pub fn pid(&self, name: &str) -> Result<Option<u32>> {
        Ok(lock(&self.slot(name)?.state).pid)
    }

    /// How often `name` was restarted after exiting on its own (or being killed).
    pub fn restarts(&self, name: &str) -> Result<u64> {
        Ok(lock(&self.slot(name)?.state).restarts)
    }

    /// How `name`'s last process ended.
    pub fn last_exit(&self, name: &str) -> Result<Option<ExitStatus>> {
        Ok(lock(&self.slot(name)?.state).last_exit)
    }

    /// SIGKILL to `name`'s whole process group, like `docker kill`: a crash. Unless restarts
    /// are paused, the supervisor starts it again. Returns the killed pid, if it was running.
    pub fn kill(&self, name: &str) -> Result<Option<u32>> {
        self.signal(name, Signal::Kill, Target::Group)
    }

    /// Sends `signal` to `name`'s current process, or to its whole process group; returns the
    /// pid, if it was running. Sent with the state locked, so never to a recycled pid.
    pub fn signal(&self, name: &str, signal: Signal, target: Target) -> Result<Option<u32>> {
        let slot = self.slot(name)?;
        let state = lock(&slot.state);
        if let Some(pid) = state.pid {
            tracing::info!(name, pid, ?signal, ?target, "signalling");
            match target {
                Target::Group => unix::signal_group(pid, signal),
                Target::Leader => unix::signal_process(pid, signal),
            }
            .context(|| format!("sending {signal:?} to {pid} ({name})"))?;
        }
        Ok(state.pid)
    }

    /// Keeps `name` down after its next exit (e.g. [`Supervisor::kill`] it afterwards to
    /// simulate a crash that stays down).
    pub fn pause_restarts(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        lock(&slot.state).enabled = false;
        slot.changed.notify_all();
        Ok(())
    }

    /// Stops `name` and keeps it down: its stop signal, then SIGKILL after [`STOP_GRACE`].
    /// Returns once the process has exited.
    pub fn stop(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        let mut state = lock(&slot.state);
        state.enabled = false;
        slot.changed.notify_all();
        if let Some(pid) = state.pid {
            tracing::info!(name, pid, "stopping");
            unix::signal_group(pid, slot.spec.stop_signal)
                .context(|| format!("signalling {name}"))?;
            // A process frozen by SIGSTOP acts on its stop signal only once it runs again.
            unix::signal_group(pid, Signal::Cont).context(|| format!("signalling {name}"))?;
        }
        let deadline = Instant::now() + STOP_GRACE;
        state = slot.wait_while(state, deadline, |s| s.pid.is_some());
        if let Some(pid) = state.pid {
            tracing::warn!(name, pid, "did not stop in time, killing");
            unix::signal_group(pid, Signal::Kill).context(|| format!("killing {name}"))?;
            let _state = slot.wait_while(state, Instant::now() + STOP_GRACE, |s| s.pid.is_some());
        }
        Ok(())
    }

    /// Starts `name` again after [`Supervisor::stop`] or [`Supervisor::pause_restarts`] and
    /// resumes restarting it. Returns at once; see [`Supervisor::wait_running`].
    pub fn start(&self, name: &str) -> Result<()> {
        let slot = self.slot(name)?;
        lock(&slot.state).enabled = true;
        slot.changed.notify_all();
        Ok(())
    }

    /// Sets (or, with `None`, removes) an environment variable of `name` for its next start:
    /// tests restart a process with a failpoint armed this way.
    pub fn set_env(&self, name: &str, key: &str, value: Option<&str>) -> Result<()> {
        let slot = self.slot(name)?;
        lock(&slot.state)
            .env_overrides
            .insert(key.into(), value.map(OsString::from));
        Ok(())
    }

    /// Waits until `name` has a running process, at most `timeout`; returns its pid.
    pub fn wait_running(&self, name: &str, timeout: Duration) -> Result<u32> {
        let slot = self.slot(name)?;
        let state = slot.wait_while(lock(&slot.state), Instant::now() + timeout, |s| {
            s.pid.is_none()
        });
        state.pid.ok_or_else(|| Error::Timeout {
            what: format!("{name} to run"),
            seconds: timeout.as_secs(),
        })
    }

    /// Stops everything: each child's stop signal, up to [`STOP_GRACE`] to exit, then SIGKILL.
    /// Idempotent; also run by `Drop`.
    pub fn shutdown(&self) {
        *lock(&self.shutting_down) = true;
        let slots: Vec<Arc<Slot>> = lock(&self.children).values().cloned().collect();
        for slot in &slots {
            let mut state = lock(&slot.state);
            state.shutting_down = true;
            slot.changed.notify_all();
            if let Some(pid) = state.pid {
                tracing::info!(name = slot.name, pid, "stopping");
                // SIGCONT: a process frozen by SIGSTOP acts on its stop signal only once it runs.
                for signal in [slot.spec.stop_signal, Signal::Cont] {
                    if let Err(error) = unix::signal_group(pid, signal) {
                        tracing::warn!(name = slot.name, %error, "cannot signal");
                    }
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for slot in &slots {
            let state = slot.wait_while(lock(&slot.state), deadline, |s| s.pid.is_some());
            if let Some(pid) = state.pid {
                tracing::warn!(name = slot.name, pid, "did not stop in time, killing");
                if let Err(error) = unix::signal_group(pid, Signal::Kill) {
                    tracing::warn!(name = slot.name, %error, "cannot kill");
                }
            }
        }
        for slot in &slots {
            let handle = lock(&slot.thread).take();
            if let Some(handle) = handle {
                if handle.join().is_err() {
                    tracing::error!(name = slot.name, "supervisor thread panicked");
                }
            }
        }
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>> {
        lock(&self.children)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownProcess(name.to_owned()))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Locks, ignoring poisoning: the state stays consistent because every update is a plain field
/// write, and the supervisor must keep working (and shut down) after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An error with its causes, for one log line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
