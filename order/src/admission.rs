//! Admission control: how many checkouts this instance runs at once, and the queue in front.
//!
//! Every checkout in flight may hold one prepared branch in each database until it is
//! decided, and PostgreSQL refuses a `PREPARE TRANSACTION` beyond `max_prepared_transactions`.
//! Starting more checkouts than the databases can hold prepared does not make them faster;
//! it makes them fail. So each instance runs at most `CHECKOUTS_IN_FLIGHT` checkouts and holds
//! the rest in a first-come-first-served queue, where nothing has been claimed or prepared
//! yet. A checkout is refused for load only when it has waited `CHECKOUT_QUEUE_MS` in that
//! queue: then with a 503 and `Retry-After`, having changed nothing. The arithmetic that sizes
//! both is in the README ("Admission control").
//!
//! The queue holds no connection and no lock, so the short routes (`find`, `addItem`) never
//! wait behind it.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::telemetry;

pub struct Admission {
    running: Semaphore,
    queue_wait: Duration,
    waiting: AtomicUsize,
}

impl Admission {
    pub fn new(in_flight: usize, queue_wait: Duration) -> Self {
        Self {
            running: Semaphore::new(in_flight),
            queue_wait,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a place among the checkouts in flight, in arrival order; `None` if none
    /// came free within the queue wait. The place is given back when the permit is dropped.
    pub async fn enter(&self) -> Option<SemaphorePermit<'_>> {
        let started = Instant::now();
        let waiting = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(telemetry::CHECKOUTS_QUEUED).set(waiting as f64);
        let permit = tokio::time::timeout(self.queue_wait, self.running.acquire()).await;
        let waiting = self.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(telemetry::CHECKOUTS_QUEUED).set(waiting as f64);
        metrics::histogram!(telemetry::CHECKOUT_QUEUE_WAIT).record(started.elapsed().as_secs_f64());
        // The semaphore is never closed, so acquiring fails only by running out of time.
        permit.ok()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_given_in_arrival_order_and_the_queue_wait_is_bounded() {
        let admission = Admission::new(1, Duration::from_millis(50));
        let first = admission.enter().await.expect("a free place");
        assert!(
            admission.enter().await.is_none(),
            "no place comes free while the first holds it"
        );
        drop(first);
        let admission = std::sync::Arc::new(Admission::new(1, Duration::from_secs(10)));
        let held = admission.enter().await.expect("a free place");
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for n in 0..3 {
            let (queued, order) = (admission.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let _place = queued.enter().await.expect("a place within the wait");
                order.lock().unwrap().push(n);
            }));
            // Each waiter is queued before the next one arrives (this test's runtime has one
            // thread: a waiter counted has run up to its wait).
            while admission.waiting.load(Ordering::Relaxed) < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for task in waiting {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
