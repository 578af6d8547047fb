//! Free TCP ports for test systems, so that two runs (or two tests) never clash.
//!
//! Ports come from below Linux's ephemeral range (32768 and up): outgoing connections take
//! their local ports from that range, and a restarted service must always be able to bind its
//! port again, which a port the kernel may hand to a client at any time cannot promise.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

/// The range free ports are drawn from.
pub const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Ports already handed out by this process: a port released by its probe listener looks free
/// again until its real owner binds it.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// One port that nothing listens on now and that this process has not handed out before.
pub fn free_port() -> Result<u16> {
    let random = RandomState::new();
    let mut handed_out = handed_out()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let span = u64::from(RANGE.end - RANGE.start);
    for attempt in 0..1000u64 {
        let offset = random.hash_one(attempt) % span;
        let port = RANGE.start + u16::try_from(offset).unwrap_or(0);
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
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

    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let ports = free_ports(50).unwrap();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 50);
        assert!(ports.iter().all(|port| RANGE.contains(port)));
    }
}
