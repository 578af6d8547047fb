//! Checkouts that share one global transaction.
//!
//! Every checkout of a global transaction of its own pays the whole fixed cost of two-phase
//! commit: a prepared branch in each database (a local transaction ending in a flushed
//! `PREPARE TRANSACTION`), a forced decision, a flushed `COMMIT PREPARED` in each database, and
//! the HTTP hops between the services. Under load, the checkouts of one order instance that
//! are ready at the same moment share one transaction instead: one branch per participant
//! holds all their works, done one member after another, all or none. What a checkout costs
//! then falls with the load, while a lone checkout waits for nobody.
//!
//! **Forming.** A checkout joins the batch that is forming, or starts one. A batch is sent once
//! it has a place among the batches in flight (`CHECKOUT_BATCHES`) and every checkout that
//! joined it has claimed its order with the batch's txid (or left it: its order was paid,
//! claimed by another transaction, refused without a transaction). A batch takes a place at
//! once when no batch of this instance is in flight; while one is, the forming batch gathers
//! the checkouts that arrive meanwhile, up to `CHECKOUT_BATCH_MAX`, and takes the place that
//! batch leaves. Only if none comes free within `CHECKOUT_BATCH_PATIENCE_MS` does it take one of
//! the other places, so that a batch stuck in flight (a participant stopped under its prepare, a
//! frozen coordinator) holds the others up for that long, not for its whole deadline. One
//! transaction at a time carries most checkouts: on two shared cores that was measured
//! cheaper, and faster at 4 checkouts in flight too, than two running side by side.
//!
//! **All or none.** The batch commits or aborts as a whole: an order is paid if and only if
//! its batch committed, exactly as for one checkout. A participant that refuses one member's
//! work refuses the branch and names the member ([`twopc::wire::Refusal::member`]). Members
//! are done in order, so a business refusal of the first member of a branch's work is the
//! truth about that checkout alone; any other member refused is tried again in a batch of its
//! own (its refusal may only say what the members before it took), and every other member of
//! the aborted batch is tried again at once (see `checkout`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use service_kit::{sync::lock, tasks::Tasks};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use twopc::Deadline;
use uuid::Uuid;

/// One transaction's deadlines, nested inside the budget of every checkout in it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub txid: Uuid,
    pub deadline: Deadline,
    pub reply_by: Deadline,
}

/// The reply to a coordinator call may arrive this long after `reply_by` (network, scheduling).
pub const REPLY_MARGIN: Duration = Duration::from_secs(1);

impl Attempt {
    fn new(phase_one: Duration, phase_two_wait: Duration) -> Self {
        let deadline = Deadline::after(phase_one);
        Self {
            txid: Uuid::new_v4(),
            deadline,
            reply_by: deadline.plus(phase_two_wait),
        }
    }

    /// Whether the whole attempt, its reply included, ends before `budget`: an attempt cut
    /// short by a checkout's budget would only abort.
    fn fits(&self, budget: Instant) -> bool {
        let left = budget.checked_duration_since(Instant::now());
        let needed = self.reply_by.remaining().unwrap_or_default() + REPLY_MARGIN;
        left.is_some_and(|left| left >= needed)
    }
}

/// The batches of one order instance: the one forming, and the places for those in flight.
pub struct Batches<M, R> {
    forming: Mutex<Option<Arc<Batch<M, R>>>>,
    places: Places,
    max_members: usize,
    phase_one: Duration,
    phase_two_wait: Duration,
    tasks: Tasks,
}

struct Batch<M, R> {
    attempt: Attempt,
    members: Mutex<Members<M>>,
    /// A member became ready or left.
    changed: Notify,
    result: watch::Sender<Done<R>>,
}

/// Where a batch is.
#[derive(Clone)]
enum Done<R> {
    Waiting,
    /// It ran: its result, `None` if running it failed (a panic).
    Ran(Option<R>),
}

struct Members<M> {
    /// Checkouts that joined and are neither ready nor gone yet.
    joining: usize,
    ready: Vec<M>,
    /// Still taking new members.
    open: bool,
}

/// A checkout's place in a batch. Dropped before [`Ticket::run`], it leaves the batch.
pub struct Ticket<M, R> {
    batch: Arc<Batch<M, R>>,
    joined: bool,
}

/// The places for batches in flight, and how long a batch waits for the one in flight to end
/// before it takes another.
#[derive(Clone)]
struct Places {
    free: Arc<Semaphore>,
    count: usize,
    /// A place came free.
    freed: Arc<Notify>,
    patience: Duration,
}

/// A batch's place in flight; dropped when the batch has run.
struct Place {
    permit: Option<OwnedSemaphorePermit>,
    freed: Arc<Notify>,
}

impl Drop for Place {
    fn drop(&mut self) {
        // Released first, so that a waiter woken finds the place free.
        drop(self.permit.take());
        self.freed.notify_waiters();
    }
}

impl Places {
    fn place(&self, permit: OwnedSemaphorePermit) -> Place {
        Place {
            permit: Some(permit),
            freed: self.freed.clone(),
        }
    }

    /// A place, if no batch is in flight.
    fn if_idle(&self) -> Option<Place> {
        if self.free.available_permits() < self.count {
            return None;
        }
        let permit = self.free.clone().try_acquire_owned().ok()?;
        Some(self.place(permit))
    }

    /// Waits until no batch is in flight, or for `patience` and then for any free place.
    async fn wait(&self) -> Place {
        let patient_until = tokio::time::Instant::now() + self.patience;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(place) = self.if_idle() {
                return place;
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep_until(patient_until) => break,
            }
        }
        let permit = self.free.clone().acquire_owned().await;
        self.place(permit.expect("the places' semaphore is never closed"))
    }
}

impl<M: Send + 'static, R: Clone + Send + Sync + 'static> Batches<M, R> {
    /// `places`: batches in flight at once; `max_members`: checkouts in one batch; `patience`:
    /// how long a batch waits for the one in flight before it takes another place. Each
    /// batch runs under `tasks`, whoever waits for it.
    pub fn new(
        places: usize,
        max_members: usize,
        patience: Duration,
        phase_one: Duration,
        phase_two_wait: Duration,
        tasks: Tasks,
    ) -> Self {
        let places = places.max(1);
        Self {
            tasks,
            forming: Mutex::new(None),
            places: Places {
                free: Arc::new(Semaphore::new(places)),
                count: places,
                freed: Arc::new(Notify::new()),
                patience,
            },
            max_members: max_members.max(1),
            phase_one,
            phase_two_wait,
        }
    }

    /// Whether an attempt started now would end before `budget`.
    pub fn fits(&self, budget: Instant) -> bool {
        Attempt::new(self.phase_one, self.phase_two_wait).fits(budget)
    }

    /// Joins the forming batch, or starts one that `run` will run with its members; `alone`
    /// starts a batch nobody else joins. `None` if no attempt ending before `budget` can be
    /// made any more.
    pub fn join<F, Fut>(&self, alone: bool, budget: Instant, run: F) -> Option<Ticket<M, R>>
    where
        F: FnOnce(Attempt, Vec<M>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R> + Send + 'static,
    {
        let mut forming = lock(&self.forming);
        if !alone {
            if let Some(batch) = forming.as_ref() {
                let mut members = lock(&batch.members);
                let room = members.joining + members.ready.len() < self.max_members;
                if members.open && room && batch.attempt.fits(budget) {
                    members.joining += 1;
                    drop(members);
                    return Some(Ticket {
                        batch: batch.clone(),
                        joined: true,
                    });
                }
            }
        }
        let attempt = Attempt::new(self.phase_one, self.phase_two_wait);
        if !attempt.fits(budget) {
            return None;
        }
        // With no batch in flight the batch goes at once, closed to newcomers; otherwise it
        // gathers them until it gets a place.
        let place = self.places.if_idle();
        let open = !alone && place.is_none();
        let batch = Arc::new(Batch {
            attempt,
            members: Mutex::new(Members {
                joining: 1,
                ready: Vec::new(),
                open,
            }),
            changed: Notify::new(),
            result: watch::Sender::new(Done::Waiting),
        });
        if open {
            *forming = Some(batch.clone());
        }
        let places = self.places.clone();
        self.tasks
            .spawn(drive(batch.clone(), place, places, self.tasks.clone(), run));
        Some(Ticket {
            batch,
            joined: true,
        })
    }
}

/// Runs one batch: waits for a place (unless it has one), closes the batch to newcomers,
/// waits until every member that joined is ready or gone, runs it and announces the result.
async fn drive<M, R, F, Fut>(
    batch: Arc<Batch<M, R>>,
    place: Option<Place>,
    places: Places,
    tasks: Tasks,
    run: F,
) where
    M: Send + 'static,
    R: Clone + Send + Sync + 'static,
    F: FnOnce(Attempt, Vec<M>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let place = match place {
        Some(place) => place,
        None => places.wait().await,
    };
    lock(&batch.members).open = false;
    let members = loop {
        let changed = batch.changed.notified();
        {
            let mut members = lock(&batch.members);
            if members.joining == 0 {
                break std::mem::take(&mut members.ready);
            }
        }
        changed.await;
    };
    if !members.is_empty() {
        // In a task of its own, so that members waiting for the result hear of a panic.
        let result = tasks.run(run(batch.attempt, members)).await;
        batch.result.send_replace(Done::Ran(result));
    }
    drop(place);
}

impl<M, R: Clone> Ticket<M, R> {
    /// The transaction this checkout claims its order for.
    pub fn attempt(&self) -> Attempt {
        self.batch.attempt
    }

    /// Hands the member's work to the batch and waits for the batch's result, with the
    /// member's position in it. `None` if the batch ended without one (running it failed).
    pub async fn run(mut self, member: M) -> Option<(usize, R)> {
        let mut result = self.batch.result.subscribe();
        let index = {
            let mut members = lock(&self.batch.members);
            members.ready.push(member);
            members.joining -= 1;
            members.ready.len() - 1
        };
        self.joined = false;
        self.batch.changed.notify_one();
        let done = result
            .wait_for(|done| matches!(done, Done::Ran(_)))
            .await
            .ok()?
            .clone();
        match done {
            Done::Ran(result) => Some((index, result?)),
            Done::Waiting => None,
        }
    }
}

impl<M, R> Drop for Ticket<M, R> {
    fn drop(&mut self) {
        if self.joined {
            lock(&self.batch.members).joining -= 1;
            self.batch.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
