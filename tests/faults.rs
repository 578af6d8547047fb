//! Checkout that tells the truth, and keeps going, through any single crash (issue 10).
//!
//! The course's consistency scenario (one item with stock 100 and price 1, 1000 users with
//! credit 1, 1000 orders, 1000 checkouts with 100 in flight) once per fault, each on a fresh
//! system, the fault injected 0.4 s into the checkouts: SIGKILL of a coordinator, of an
//! instance of each service, of each database's postmaster, of a gateway process; SIGSTOP of
//! a coordinator and of a stock instance for 10 s; a coordinator kept down for 15 s. The
//! client retries a connection error at once, and the retry's reply is what counts. Each run:
//!
//! - every 200 is paid and charged, every 4xx neither, and a 5xx only for what was applied
//!   (a client counts a 5xx as "maybe applied");
//! - no connection error reaches the client; only when a gateway process is killed may a
//!   request see one, only on an attempt begun before the process was gone (every attempt
//!   opens its own connection), and then a retry gets a reply;
//! - all 100 units are sold (stock 0, credit left 900): nothing refused for lack of a
//!   coordinator or an instance while users with credit wanted them;
//! - nothing is left prepared 10 s after the last reply, and the 1000 checkouts take at most
//!   20 s.
//!
//! Paid flags are read only once nothing is prepared any more: a commit finished by recovery
//! is still a commit. Every case prints its duration, its replies by status and the client's
//! connection retries. One more case is deterministic: a checkout held right after its commit
//! decision (the coordinators' `hold_after_decision` failpoint) loses the order instance
//! serving it, and the client's retry through the gateway must get 200.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use launcher::topology::gateway_process;
use reqwest::StatusCode;
use sqlx::Connection;
use system_tests::{
    arm_coordinator_failpoint, connect, one_loaded_system_at_a_time, order_of_two,
    prepared_count_now, run_checkouts_retrying, scalar_i64, start, wait_until, Api, Service,
    System, TriedCheckout, CONSISTENCY_STOCK, CONSISTENCY_USERS,
};

/// When the fault strikes, counted from the first checkout.
const FAULT_AFTER: Duration = Duration::from_millis(400);
/// Concurrent checkouts.
const IN_FLIGHT: usize = 100;
/// The 1000 checkouts finish within this, whatever the fault.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Nothing is prepared any more this long after the last reply.
const SETTLED_WITHIN: Duration = Duration::from_secs(10);
/// How long a frozen process stays frozen, and a process kept down stays down.
const FROZEN_FOR: Duration = Duration::from_secs(10);
const DOWN_FOR: Duration = Duration::from_secs(15);
/// A killed process runs again within this.
const RESTART_LIMIT: Duration = Duration::from_secs(30);

/// What happens to the system 0.4 s into the checkouts.
#[derive(Debug, Clone)]
enum Fault {
    /// SIGKILL to a process group; the supervisor restarts it.
    Kill(String),
    /// SIGKILL to a database's postmaster alone; restarted, it recovers from its WAL.
    KillPostmaster(Service),
    /// SIGSTOP to a process group, SIGCONT after [`FROZEN_FOR`].
    Freeze(String),
    /// Down (restarts paused, SIGKILL) for [`DOWN_FOR`], then started again.
    KeepDown(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(name) => write!(f, "kill -9 {name}"),
            Fault::KillPostmaster(service) => {
                write!(f, "kill -9 the {} postmaster", service.name())
            }
            Fault::Freeze(name) => write!(f, "SIGSTOP {name} for {FROZEN_FOR:?}"),
            Fault::KeepDown(name) => write!(f, "{name} down for {DOWN_FOR:?}"),
        }
    }
}

impl Fault {
    /// Only the loss of a gateway process may cut a client's connection: the requests it had
    /// in flight are lost with it.
    fn cuts_client_connections(&self, system: &System) -> bool {
        matches!(self, Fault::Kill(name) if system.gateways().contains(name))
    }

    /// Injects the fault; returns the instant from which no new connection may fail (the
    /// killed process is gone, so the kernel no longer queues connections on its sockets).
    async fn inject(&self, system: &System) -> Instant {
        match self {
            Fault::Kill(name) => {
                let pid = system
                    .kill(name)
                    .unwrap_or_else(|error| panic!("kill {name}: {error}"))
                    .unwrap_or_else(|| panic!("{name} was not running"));
                let deadline = Instant::now() + Duration::from_secs(5);
                while system.supervisor().pid(name).expect("pid") == Some(pid) {
                    assert!(Instant::now() < deadline, "{name} did not die");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let gone = Instant::now();
                system
                    .wait_restarted(name, pid, RESTART_LIMIT)
                    .await
                    .unwrap_or_else(|error| panic!("{name} restarted: {error}"));
                gone
            }
            Fault::KillPostmaster(service) => {
                let name = service.postgres_process();
                let pid = system
                    .kill_postmaster(*service)
                    .unwrap_or_else(|error| panic!("kill the {name} postmaster: {error}"));
                let gone = Instant::now();
                system
                    .wait_restarted(&name, pid, RESTART_LIMIT)
                    .await
                    .unwrap_or_else(|error| panic!("{name} restarted: {error}"));
                gone
            }
            Fault::Freeze(name) => {
                system
                    .pause(name)
                    .await
                    .unwrap_or_else(|error| panic!("SIGSTOP {name}: {error}"));
                let frozen = Instant::now();
                // The freeze's length is the fault itself, not a wait for a condition.
                tokio::time::sleep(FROZEN_FOR).await;
                system
                    .resume(name)
                    .unwrap_or_else(|error| panic!("SIGCONT {name}: {error}"));
                frozen
            }
            Fault::KeepDown(name) => {
                system
                    .keep_down(name, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|error| panic!("keep {name} down: {error}"));
                let down = Instant::now();
                // The outage's length is the fault itself, as a `docker stop`, later `start`.
                tokio::time::sleep(DOWN_FOR).await;
                system
                    .bring_back(name, RESTART_LIMIT)
                    .await
                    .unwrap_or_else(|error| panic!("start {name} again: {error}"));
                down
            }
        }
    }
}

/// Replies by status class, as the case's summary prints them.
#[derive(Debug, Default)]
struct Counts {
    ok: usize,
    bad_request: usize,
    conflict: usize,
    unavailable: usize,
    other: usize,
    /// No reply at all: a connection error on the last attempt.
    none: usize,
    connection_retries: usize,
}

impl Counts {
    fn of(results: &[TriedCheckout]) -> Self {
        let mut counts = Counts::default();
        for checkout in results {
            match checkout.status() {
                Some(StatusCode::OK) => counts.ok += 1,
                Some(StatusCode::BAD_REQUEST) => counts.bad_request += 1,
                Some(StatusCode::CONFLICT) => counts.conflict += 1,
                Some(StatusCode::SERVICE_UNAVAILABLE) => counts.unavailable += 1,
                Some(_) => counts.other += 1,
                None => counts.none += 1,
            }
            counts.connection_retries += checkout.connection_errors().count();
        }
        counts
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "200: {}, 400: {}, 409: {}, 503: {}, other: {}, no reply: {}, connection retries: {}",
            self.ok,
            self.bad_request,
            self.conflict,
            self.unavailable,
            self.other,
            self.none,
            self.connection_retries
        )
    }
}

/// The databases' view once nothing is prepared: each order's user and paid flag, each
/// user's credit, the stock left.
struct Books {
    orders: BTreeMap<String, (String, bool)>,
    credit: BTreeMap<String, i64>,
    stock: i64,
}

impl Books {
    async fn read(system: &System) -> Self {
        let mut order_db = connect(system, Service::Order).await;
        let orders: Vec<(String, String, bool)> =
            sqlx::query_as("select id, user_id, paid from orders")
                .fetch_all(&mut order_db)
                .await
                .expect("orders");
        order_db.close().await.expect("close");
        let mut payment_db = connect(system, Service::Payment).await;
        let credit: Vec<(String, i64)> = sqlx::query_as("select id, credit from users")
            .fetch_all(&mut payment_db)
            .await
            .expect("users");
        payment_db.close().await.expect("close");
        // The scenario's one item.
        let stock = scalar_i64(
            system,
            Service::Stock,
            "select sum(stock)::bigint from items",
        )
        .await;
        Books {
            orders: orders
                .into_iter()
                .map(|(id, user, paid)| (id, (user, paid)))
                .collect(),
            credit: credit.into_iter().collect(),
            stock,
        }
    }
}

/// The consistency scenario with `fault` 0.4 s in, on a fresh system, and every check of the
/// module header. All failures of the case are listed before it fails.
async fn consistency_through(fault: Fault) {
    let _one_at_a_time = one_loaded_system_at_a_time().await;
    let system = start().await;
    let api = Api::new(&system);
    let scenario = system_tests::consistency(&api).await;

    let started = Instant::now();
    let run = run_checkouts_retrying(&api, &scenario.orders, IN_FLIGHT);
    let strike = async {
        // The moment of the fault is part of the scenario, not a wait for a condition.
        tokio::time::sleep(FAULT_AFTER).await;
        fault.inject(&system).await
    };
    let (results, fault_done) = tokio::join!(run, strike);
    let last_reply = results
        .iter()
        .filter_map(TriedCheckout::ended)
        .max()
        .unwrap_or(started);
    let took = last_reply - started;

    let mut failures = Vec::new();
    // Nothing prepared 10 s after the last reply, read before any paid flag.
    let settle_deadline = last_reply + SETTLED_WITHIN;
    let settled = loop {
        if prepared_count_now(&system).await == Some(0) {
            break true;
        }
        if Instant::now() >= settle_deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !settled {
        failures.push(format!(
            "still prepared {SETTLED_WITHIN:?} after the last reply: {:?} transactions",
            prepared_count_now(&system).await
        ));
        // The books are read anyway, once recovery had more time, for the report.
        wait_until("nothing prepared", Duration::from_secs(60), || async {
            prepared_count_now(&system).await == Some(0)
        })
        .await;
    }
    let books = Books::read(&system).await;
    let counts = Counts::of(&results);
    eprintln!(
        "faults: {fault}: 1000 checkouts in {:.2} s; {counts}\n  {}",
        took.as_secs_f64(),
        timeline(started, &results)
    );

    if results.len() != scenario.orders.len() {
        failures.push(format!(
            "{} replies for {} orders",
            results.len(),
            scenario.orders.len()
        ));
    }
    if took > RUN_LIMIT {
        failures.push(format!(
            "the checkouts took {took:?}, more than {RUN_LIMIT:?}"
        ));
    }
    let mut wrong = Vec::new();
    let mut paid_by_user: BTreeMap<&str, i64> = BTreeMap::new();
    for (user, paid) in books.orders.values() {
        *paid_by_user.entry(user.as_str()).or_default() += i64::from(*paid);
    }
    for checkout in &results {
        let (_, paid) = books.orders[&checkout.order];
        let truthful = match checkout.status() {
            Some(status) if status == StatusCode::OK || status.is_server_error() => paid,
            Some(status) if status.is_client_error() => !paid,
            _ => false,
        };
        if !truthful {
            wrong.push(format!(
                "{}: {:?} but paid = {paid}",
                checkout.order,
                checkout.status()
            ));
        }
    }
    if !wrong.is_empty() {
        failures.push(format!(
            "{} replies that lie: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        ));
    }
    // Charged exactly once per paid order: every user started with credit 1.
    let overcharged: Vec<_> = books
        .credit
        .iter()
        .filter(|(user, credit)| {
            1 - **credit != paid_by_user.get(user.as_str()).copied().unwrap_or(0)
        })
        .collect();
    if !overcharged.is_empty() {
        failures.push(format!(
            "credit not what the paid orders charged: {overcharged:?}"
        ));
    }
    if books.stock != 0 {
        failures.push(format!("{} units unsold", books.stock));
    }
    let credit_left: i64 = books.credit.values().sum();
    if credit_left != CONSISTENCY_USERS - CONSISTENCY_STOCK {
        failures.push(format!("credit left {credit_left}, not 900"));
    }
    // Connection errors: only a killed gateway process may cause them, only to attempts
    // begun before it was gone (each on a connection of its own), and a retry must have had
    // a reply. An at-once retry begun while the process was still being torn down may be cut
    // too; one begun after it was gone may not.
    for checkout in &results {
        let errors: Vec<_> = checkout.connection_errors().collect();
        if errors.is_empty() {
            continue;
        }
        let excused = fault.cuts_client_connections(&system)
            && checkout.status().is_some()
            && errors.iter().all(|attempt| attempt.started <= fault_done);
        if !excused {
            failures.push(format!(
                "{}: connection errors reached the client (started before (-) or after the \
                 killed process was gone, ms): {:?}; last reply {:?}",
                checkout.order,
                errors
                    .iter()
                    .map(|a| (since(fault_done, a.started), &a.reply))
                    .collect::<Vec<_>>(),
                checkout.status()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{fault}: {} failures ({counts}, {:.2} s):\n{}",
        failures.len(),
        took.as_secs_f64(),
        failures.join("\n")
    );
}

/// Milliseconds from `reference` to `instant`, negative if before.
fn since(reference: Instant, instant: Instant) -> f64 {
    match instant.checked_duration_since(reference) {
        Some(after) => after.as_secs_f64() * 1e3,
        None => -(reference - instant).as_secs_f64() * 1e3,
    }
}

/// Replies per second of the run (200s and others), the last sale, and the slowest checkout:
/// where a slow run's time went.
fn timeline(started: Instant, results: &[TriedCheckout]) -> String {
    let mut seconds: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let mut last_sale = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    let mut slowest_order = "";
    for checkout in results {
        let (Some(ended), Some(first)) = (checkout.ended(), checkout.attempts.first()) else {
            continue;
        };
        let at = ended - started;
        if ended - first.started > slowest {
            slowest = ended - first.started;
            slowest_order = &checkout.order;
        }
        let second = seconds.entry(at.as_secs()).or_default();
        if checkout.status() == Some(StatusCode::OK) {
            second.0 += 1;
            last_sale = last_sale.max(at);
        } else {
            second.1 += 1;
        }
    }
    let per_second: Vec<String> = seconds
        .iter()
        .map(|(second, (ok, other))| format!("{second}s:{ok}/{other}"))
        .collect();
    format!(
        "replies by second (200/other): {}; last 200 at {:.2} s; slowest checkout {:.2} s \
         (order {slowest_order})",
        per_second.join(" "),
        last_sale.as_secs_f64(),
        slowest.as_secs_f64()
    )
}

fn first(service: Service) -> String {
    service.instance_process(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_kill_of_coordinator_1() {
    consistency_through(Fault::Kill(first(Service::Coordinator))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_kill_of_order_1() {
    consistency_through(Fault::Kill(first(Service::Order))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_kill_of_stock_1() {
    consistency_through(Fault::Kill(first(Service::Stock))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_kill_of_payment_1() {
    consistency_through(Fault::Kill(first(Service::Payment))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_crash_of_the_order_database() {
    consistency_through(Fault::KillPostmaster(Service::Order)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_crash_of_the_stock_database() {
    consistency_through(Fault::KillPostmaster(Service::Stock)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_crash_of_the_payment_database() {
    consistency_through(Fault::KillPostmaster(Service::Payment)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_crash_of_the_coordinator_database() {
    consistency_through(Fault::KillPostmaster(Service::Coordinator)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_through_a_kill_of_gateway_1() {
    consistency_through(Fault::Kill(gateway_process(1))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_while_coordinator_1_is_frozen_for_10_s() {
    consistency_through(Fault::Freeze(first(Service::Coordinator))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_while_stock_1_is_frozen_for_10_s() {
    consistency_through(Fault::Freeze(first(Service::Stock))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_tell_the_truth_while_coordinator_1_is_down_for_15_s() {
    consistency_through(Fault::KeepDown(first(Service::Coordinator))).await;
}

/// The failpoint that holds the first transaction reaching the point right after its commit
/// decision is durable, for 5 s before phase two (`coordinator/src/failpoint.rs`).
const HOLD_AFTER_DECISION: &str = "hold_after_decision";

/// A checkout whose commit decision is logged loses the order instance serving it before it
/// replies: the client's retry, through the gateway to the other instance, follows the first
/// transaction (recorded on the order row) and reports its commit; the order is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_committed_while_its_order_instance_dies_is_reported_200_to_the_retry() {
    let _one_at_a_time = one_loaded_system_at_a_time().await;
    let system = start().await;
    let api = Api::new(&system);
    let bought = order_of_two(&api).await;
    let order = &bought.order;
    arm_coordinator_failpoint(&system, HOLD_AFTER_DECISION).await;

    let order_1 = first(Service::Order);
    let direct = format!(
        "{}/orders/checkout/{order}",
        system.instance_url(&order_1).expect("order-1's URL")
    );
    let held = tokio::spawn({
        let http = api.http.clone();
        async move {
            match http.post(&direct).send().await {
                Ok(response) => Ok(response.status()),
                Err(error) => Err(error.to_string()),
            }
        }
    });
    wait_until(
        "the commit decision in the log",
        Duration::from_secs(20),
        || async {
            scalar_i64(
                &system,
                Service::Coordinator,
                "select count(*) from decisions",
            )
            .await
                > 0
        },
    )
    .await;
    assert!(
        !held.is_finished(),
        "the checkout replied before order-1 was killed: {:?} (is {HOLD_AFTER_DECISION} armed?)",
        held.await
    );
    system.kill(&order_1).expect("kill order-1");
    let lost = held.await.expect("the direct checkout");
    assert!(lost.is_err(), "order-1 replied although killed: {lost:?}");

    let retried = api.checkout_retrying(order).await;
    assert_eq!(retried.status(), Some(StatusCode::OK), "{retried:?}");
    wait_until("nothing prepared", SETTLED_WITHIN, || async {
        prepared_count_now(&system).await == Some(0)
    })
    .await;
    bought.assert_paid_once(&api).await;
}
