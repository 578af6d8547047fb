//! A service's background tasks and the one signal that stops them.
//!
//! Every task a service starts besides answering requests (periodic jobs such as marker
//! clean-up and recovery rounds, work that outlives its request such as phase two, the decision
//! log's writer) is spawned through one [`Tasks`]. Each task either runs to its end or watches
//! [`Tasks::stopping`]; [`Tasks::stop`] raises the signal and waits, up to a deadline, until
//! every task has returned, so a process exits with nothing of its own still running.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

/// How long a stopping service waits for its background tasks: well inside the ten seconds a
/// supervisor (the launcher, docker, Kubernetes) gives between its stop signal and SIGKILL,
/// with room for the requests in progress to be answered first.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Handle to a service's background tasks; cheap to clone, all clones share one signal.
#[derive(Clone)]
pub struct Tasks(Arc<watch::Sender<State>>);

#[derive(Debug, Clone, Copy, Default)]
struct State {
    stopping: bool,
    running: usize,
}

/// Counts one running task; dropped when the task returns, panics or is cancelled.
struct Running(Arc<watch::Sender<State>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|state| state.running -= 1);
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new(State::default())))
    }

    /// Runs `task` in the background; [`Tasks::stop`] waits for it to return. A task that
    /// loops must end once [`Tasks::stopping`] resolves.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.send_modify(|state| state.running += 1);
        let running = Running(self.0.clone());
        tokio::spawn(async move {
            let _running = running;
            task.await;
        });
    }

    /// Runs `task` in the background, as [`Tasks::spawn`] does, and returns its result: a
    /// caller that stops waiting (its request was dropped) leaves the task running to its end.
    /// `None` if the task panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (result, returned) = oneshot::channel();
        self.spawn(async move {
            let _ = result.send(task.await);
        });
        returned.await.ok()
    }

    /// Resolves once [`Tasks::stop`] has been called (at once if it has been).
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.0.subscribe();
        async move {
            // The sender lives as long as any clone of this handle or any task: an error here
            // means everything that could stop us is gone, which is a stop too.
            let _ = state.wait_for(|state| state.stopping).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.0.borrow().stopping
    }

    /// Runs `job` every `interval`, the first time one interval from now, until the stop
    /// signal. A job in progress at the stop is dropped where it is, so a periodic job must be
    /// safe to cut off (every one here is a statement or a round of actions each safe to
    /// repeat). A job that overruns its interval delays the next one rather than bunching.
    pub fn every<F, J>(&self, interval: Duration, mut job: F)
    where
        F: FnMut() -> J + Send + 'static,
        J: Future<Output = ()> + Send,
    {
        let stopping = self.stopping();
        self.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let periodic = async {
                loop {
                    ticks.tick().await;
                    job().await;
                }
            };
            tokio::select! {
                () = stopping => {}
                () = periodic => {}
            }
        });
    }

    /// Raises the stop signal and waits until every task has returned, or until `deadline`.
    /// Returns how many were still running then (they are cut off when the runtime ends).
    pub async fn stop(&self, deadline: Duration) -> usize {
        self.0.send_modify(|state| state.stopping = true);
        let mut state = self.0.subscribe();
        let joined = tokio::time::timeout(deadline, state.wait_for(|state| state.running == 0));
        if joined.await.is_ok() {
            return 0;
        }
        let left = self.0.borrow().running;
        tracing::warn!(
            left,
            ?deadline,
            "background tasks still running at shutdown"
        );
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn stop_waits_for_every_task_to_see_the_signal_and_return() {
        let tasks = Tasks::new();
        let returned = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let stopping = tasks.stopping();
            let returned = returned.clone();
            tasks.spawn(async move {
                stopping.await;
                // Work after the signal (a drain) still counts as running.
                tokio::task::yield_now().await;
                returned.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert!(!tasks.is_stopping());
        assert_eq!(tasks.stop(Duration::from_secs(10)).await, 0);
        assert_eq!(returned.load(Ordering::SeqCst), 3);
        assert!(tasks.is_stopping());
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_signal_is_reported_at_the_deadline() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let quick = tasks.stopping();
        tasks.spawn(quick);
        assert_eq!(tasks.stop(Duration::from_millis(50)).await, 1);
    }

    #[tokio::test]
    async fn a_task_run_for_a_caller_that_went_away_still_runs_to_its_end() {
        let tasks = Tasks::new();
        assert_eq!(tasks.run(async { 7 }).await, Some(7));
        let (release, released) = oneshot::channel::<()>();
        let finished = Arc::new(AtomicUsize::new(0));
        let counted = finished.clone();
        let caller = tasks.run(async move {
            let _ = released.await;
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // The caller polls once (the task is spawned), then gives up.
        assert!(tokio::time::timeout(Duration::from_millis(10), caller)
            .await
            .is_err());
        release.send(()).expect("the task is still waiting");
        assert_eq!(tasks.stop(Duration::from_secs(10)).await, 0);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(tasks.run(async { panic!("deliberate") }).await, None::<()>);
    }

    #[tokio::test]
    async fn a_panicked_task_no_longer_counts_as_running() {
        let tasks = Tasks::new();
        tasks.spawn(async { panic!("deliberate") });
        assert_eq!(tasks.stop(Duration::from_secs(10)).await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_jobs_run_each_interval_and_end_at_the_stop() {
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.every(Duration::from_secs(1), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(tasks.stop(Duration::from_secs(10)).await, 0);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stopping_future_taken_after_the_stop_resolves_at_once() {
        let tasks = Tasks::new();
        assert_eq!(tasks.stop(Duration::from_secs(1)).await, 0);
        tokio::time::timeout(Duration::from_secs(10), tasks.stopping())
            .await
            .expect("already stopping");
    }
}
