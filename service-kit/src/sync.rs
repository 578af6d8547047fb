//! Locking a `std::sync::Mutex` that guards plain in-memory state.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning. For state whose every update is a few plain field writes
/// (so a panic elsewhere cannot leave it half-changed), in a process that must keep serving
/// after a panicked task rather than fail every later request on the poisoned lock.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
