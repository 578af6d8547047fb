//! Helpers shared by the launcher's tests.

use std::time::{Duration, Instant};

/// Polls `condition` until it holds, panicking with `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `condition` keeps holding for all of `window` (for "stays down" checks:
/// the absence of an event can only be observed over some time).
pub fn holds_for(what: &str, window: Duration, mut condition: impl FnMut() -> bool) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(condition(), "{what} stopped holding");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while `pid` runs (not a zombie).
pub fn alive(pid: u32) -> bool {
    launcher::unix::process_alive(pid)
}
