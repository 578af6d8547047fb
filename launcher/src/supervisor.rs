//! The supervisor: named child processes restarted whenever they exit, like containers with
//! `restart: always`.
//!
//! Each child runs in its own process group, so [`Supervisor::kill`] hits everything it
//! forked (a postmaster and its backends) the way `docker kill` hits a container. One thread
//! per child waits for it and restarts it with a backoff (100 ms doubling to 2 s, back to
//! 100 ms once a run lasted 10 s). Threads rather than tasks because the supervisor must work,
//! and clean up in `Drop`, whatever async runtime (or none) its owner uses, including while a
//! test unwinds from a panic. Children also get SIGKILL if the launcher itself dies.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::unix::{self, Signal};

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

/// Runs before every start of a child, in the supervisor (e.g. clearing a stale lock file).
pub type BeforeStart = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// How to start a child: program, arguments, environment, user, and how to stop it.
#[derive(Clone)]
pub struct CommandSpec {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    user: Option<(u32, u32)>,
    stop_signal: Signal,
    before_start: Option<BeforeStart>,
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

/// Named child processes kept running. See the module documentation.
pub struct Supervisor {
    logs_dir: PathBuf,
    children: Mutex<BTreeMap<String, Arc<Slot>>>,
    shutting_down: Mutex<bool>,
}

struct Slot {
    name: String,
    spec: CommandSpec,
    log_path: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    pid: Option<u32>,
    /// False while stopped: the child is not restarted.
    enabled: bool,
    shutting_down: bool,
    restarts: u64,
    last_exit: Option<ExitStatus>,
    /// Environment set or removed on top of the spec, from the next start on.
    env_overrides: BTreeMap<OsString, Option<OsString>>,
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

impl Slot {
    /// Starts the process; called with the state locked so that no stop or kill can slip in
    /// between the decision to start and the pid becoming visible.
    fn start(&self, state: &mut State) -> Result<Child> {
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
    fn supervise(&self, mut child: Child) {
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
    fn wait_while<'a>(
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
