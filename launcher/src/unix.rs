//! The few Unix calls the standard library lacks: signalling process groups, waiting for an
//! exit without reaping it, the parent-death signal, user lookup. Every `unsafe` of the crate
//! lives here, each call a thin wrapper over one system call.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

/// A signal the launcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ask to stop (most programs, HAProxy's hard stop).
    Term,
    /// PostgreSQL's "fast shutdown": abort sessions, checkpoint, exit.
    Int,
    /// Cannot be caught: a crash, as far as the program is concerned.
    Kill,
    /// Cannot be caught either: the process freezes, holding its sockets, connections and
    /// locks, as a hung machine or a long GC pause would.
    Stop,
    /// Lets a stopped process run again.
    Cont,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// Sends `signal` to every process of the group `pgid`. A group that no longer exists is not
/// an error: the point of the call is that those processes end.
pub fn signal_group(pgid: u32, signal: Signal) -> io::Result<()> {
    let pgid = to_pid(pgid)?;
    // SAFETY: killpg has no memory-safety preconditions.
    let rc = unsafe { libc::killpg(pgid, signal.raw()) };
    ignore_missing(rc)
}

/// Sends `signal` to the single process `pid`.
pub fn signal_process(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = to_pid(pid)?;
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal.raw()) };
    ignore_missing(rc)
}

/// True while some live (non-zombie) process belongs to the group `pgid`. Zombies do not
/// count: in a container whose init does not reap orphans they would linger forever.
pub fn group_has_live_members(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z')
    })
}

/// True while `pid` runs (exists and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .is_some_and(|(state, _)| state != 'Z')
}

/// The state letter of `pid` in `/proc/<pid>/stat` (`R`, `S`, `T` when stopped, `Z`, ...),
/// while it exists.
pub fn process_state(pid: u32) -> Option<char> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map(|(state, _)| state)
}

/// The process group of `pid`, while it runs.
pub fn process_group(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map(|(_, pgrp)| pgrp)
}

/// State and process group from `/proc/<pid>/stat` ("pid (comm) state ppid pgrp ...", where
/// comm may itself contain spaces and parentheses, hence the last ')').
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Waits until the group `pgid` has no live member, at most `limit`.
pub fn wait_group_gone(pgid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while group_has_live_members(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Blocks until our child `pid` has exited, leaving it a zombie (not reaped), so that its pid
/// and process group id cannot be reused while the caller still holds them.
pub fn wait_exit_keep_zombie(pid: u32) -> io::Result<()> {
    let id = libc::id_t::from(pid);
    loop {
        // SAFETY: siginfo_t is plain old data; zeroed is a valid value, and waitid only writes
        // into the struct we own for the duration of the call.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `info` outlives the call.
        let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Makes the calling (child) process receive SIGKILL when the thread that forked it ends, so
/// that a launcher killed with SIGKILL (or a test binary that aborts) does not leak its
/// children. Meant for `CommandExt::pre_exec`: it only calls async-signal-safe functions.
pub fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a plain integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The parent may have died before prctl ran: then nobody will send the signal.
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        // No allocation here, between fork and exec.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Starts a new session (for a daemon detaching from its terminal). For `pre_exec`.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid of this process.
pub fn current_pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// True when running as root (then PostgreSQL must be started as another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A local user's uid and gid, from `/etc/passwd` (the machines we run on have local users
/// only, and parsing the file keeps this free of `getpwnam`'s static buffers).
pub fn lookup_user(name: &str) -> io::Result<(u32, u32)> {
    lookup_user_in(Path::new("/etc/passwd"), name)
}

fn lookup_user_in(passwd: &Path, name: &str) -> io::Result<(u32, u32)> {
    let text = std::fs::read_to_string(passwd)?;
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let user = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (user == name).then_some((uid, gid))
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no user {name} in {}", passwd.display()),
            )
        })
}

fn to_pid(pid: u32) -> io::Result<libc::pid_t> {
    libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad pid {pid}")))
}

fn ignore_missing(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_in_the_passwd_file() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
    }

    #[test]
    fn stat_lines_with_odd_command_names_are_parsed() {
        assert_eq!(parse_stat("42 (a) b) S 1 42 42 0"), Some(('S', 42)));
    }

    #[test]
    fn this_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn an_unknown_user_is_a_not_found_error() {
        let error = lookup_user("no-such-user-here").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
