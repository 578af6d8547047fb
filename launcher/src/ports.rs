//! Free TCP ports for test systems, so that two runs (or two tests) never clash.
//!
//! Ports come from below Linux's ephemeral range (32768 and up): outgoing connections take
//! their local ports from that range, and a restarted service must always be able to bind its
//! port again, which a port the kernel may hand to a client at any time cannot promise.
//!
//! A port is free when nothing listens on it, but between the probe and its owner's bind
//! another process probing at the same moment could pick it too (the test runner runs each
//! test in its own process, many at once). So a port handed out is also reserved: this process
//! holds an exclusive lock on the port's file in a shared directory for as long as it lives,
//! and other processes skip ports whose file is locked. The kernel drops the lock when the
//! process exits, however it exits.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, IoContext, Result};

/// The range free ports are drawn from.
pub const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The ports this process handed out, each with the locked file that reserves it.
fn handed_out() -> &'static Mutex<HashMap<u16, File>> {
    static PORTS: OnceLock<Mutex<HashMap<u16, File>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The directory every process's reservations live in.
fn reservations() -> PathBuf {
    std::env::temp_dir().join("wdm-ports")
}

/// Locks `port`'s reservation file, or `None` when another process holds it.
fn reserve(port: u16) -> Result<Option<File>> {
    let dir = reservations();
    std::fs::create_dir_all(&dir).context(|| format!("create {}", dir.display()))?;
    // Everyone may reserve: tests run as root and as the postgres user.
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777));
    let path = dir.join(format!("{port}.lock"));
    // A lock needs no write access: another user's file is opened for reading.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|_| File::open(&path))
        .context(|| format!("open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(Error::Io {
            context: format!("lock {}", path.display()),
            source,
        }),
    }
}

/// One port that nothing listens on now and that no running process has handed out.
pub fn free_port() -> Result<u16> {
    let random = RandomState::new();
    let mut handed_out = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let span = u64::from(RANGE.end - RANGE.start);
    for attempt in 0..1000u64 {
        let offset = random.hash_one(attempt) % span;
        let port = RANGE.start + u16::try_from(offset).unwrap_or(0);
        if handed_out.contains_key(&port) {
            continue;
        }
        let Some(reservation) = reserve(port)? else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port, reservation);
            return Ok(port);
        }
    }
    Err(Error::Config(format!(
        "no free port in {}..{}",
        RANGE.start, RANGE.end
    )))
}

/// `n` distinct free ports.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    (0..n).map(|_| free_port()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports = free_ports(50).unwrap();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 50);
        assert!(ports.iter().all(|port| RANGE.contains(port)));
    }

    #[test]
    fn a_port_handed_out_is_reserved_against_other_processes() {
        let port = free_port().unwrap();
        // Another process's attempt: a second open file description of the same file.
        assert!(reserve(port).unwrap().is_none(), "port {port} not reserved");
    }
}
