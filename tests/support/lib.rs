//! Support for the system tests: a whole system per test (real binaries, four PostgreSQL
//! instances, HAProxy), a client for the public API, waiting on conditions, and the
//! invariants every fault test checks.

use std::{
    future::Future,
    time::{Duration, Instant},
};

pub use launcher::system::{Instances, Service, System};
use reqwest::StatusCode;
use serde::Deserialize;
use sqlx::{Connection, PgConnection};
pub use test_support::{
    books::{
        assert_checkouts_exact, assert_checkouts_exact_since, assert_consistency_exact, ledger,
        DatabaseReader, Ledger, Paid,
    },
    Client, Consistency, CONSISTENCY_ORDERS, CONSISTENCY_STOCK, CONSISTENCY_USERS,
};

/// Starts a private system on free ports with the debug binaries.
pub async fn start() -> System {
    start_with(Instances::default()).await
}

/// [`start`] with every database a Patroni cluster (primary and synchronous standby).
pub async fn start_ha() -> System {
    System::start_temporary_ha(Instances::default())
        .await
        .unwrap_or_else(|error| panic!("HA system did not start: {error}"))
}

pub async fn start_with(instances: Instances) -> System {
    System::start_temporary(instances)
        .await
        .unwrap_or_else(|error| panic!("system did not start: {error}"))
}

/// The cases of a test that runs them one after another on one system (an HA or a compose
/// system takes minutes to start, so each case does not get its own): a case that fails is
/// recorded instead of ending the test, the next one runs, and the test fails once at the end
/// listing every failed case, so that the first failure does not hide the others.
#[derive(Debug, Default)]
pub struct Cases {
    failures: Vec<String>,
}

impl Cases {
    /// Runs case `name` to its end; a panic inside it (a failed assertion, a wait past its
    /// deadline) is recorded as its failure. Its tasks and guards are dropped with it, so a
    /// run it left going stops (see [`ConsistencyRun`]).
    pub async fn run<T>(&mut self, name: &str, case: impl Future<Output = T>) -> Option<T> {
        match (CatchPanic(Box::pin(case))).await {
            Ok(value) => Some(value),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                eprintln!("case {name} FAILED: {message}");
                self.failures.push(format!("{name}: {message}"));
                None
            }
        }
    }

    /// Records a failure found after the cases ran (a check over all of them).
    pub fn fail(&mut self, failure: String) {
        eprintln!("FAILED: {failure}");
        self.failures.push(failure);
    }

    /// Fails the test when any case failed, naming each.
    pub fn assert_all_passed(self) {
        assert!(
            self.failures.is_empty(),
            "{} failed:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// A future that turns a panic while it is polled into an error, so that [`Cases::run`] can
/// go on with the next case. The future is boxed, so pinning needs no `unsafe`.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(value)) => std::task::Poll::Ready(Ok(value)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Waits until `condition` holds, checking every 100 ms, for at most `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Each call is bounded too: a condition that hangs must not outlive the deadline.
        match tokio::time::timeout_at(deadline, condition()).await {
            Ok(true) => return,
            Ok(false) if tokio::time::Instant::now() < deadline => {}
            _ => panic!("timed out after {limit:?} waiting for {what}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The public API through the gateway: [`Client`] with the shop's vocabulary.
#[derive(Clone)]
pub struct Api {
    client: Client,
    /// A client that keeps no idle connection: each request opens its own, so a request's
    /// connection error can be placed in time against a fault (see
    /// [`Api::checkout_retrying`]).
    unpooled: Client,
}

impl std::ops::Deref for Api {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Item {
    pub stock: i64,
    pub price: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct User {
    pub user_id: String,
    pub credit: i64,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Order {
    pub order_id: String,
    pub paid: bool,
    pub items: Vec<(String, i64)>,
    pub user_id: String,
    pub total_cost: i64,
}

/// A checkout can wait for its turn behind a fault's recovery.
const TIMEOUT: Duration = Duration::from_secs(120);

impl Api {
    pub fn new(system: &System) -> Self {
        Self::at(system.gateway_url())
    }

    /// A client of the gateway at `base` (`http://host:port`), for a system not started by
    /// the launcher (the containers).
    pub fn at(base: String) -> Self {
        Self {
            client: Client::with_limits(base.clone(), 256, TIMEOUT),
            unpooled: Client::with_limits(base, 0, TIMEOUT),
        }
    }

    /// The one client of the gateway, for what takes a [`Client`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn post_reply(&self, path: &str) -> serde_json::Value {
        self.json(reqwest::Method::POST, path).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.json(reqwest::Method::GET, path).await
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, method: reqwest::Method, path: &str) -> T {
        self.client
            .must_succeed_json(method, path)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    pub async fn create_item(&self, price: i64) -> String {
        let body = self
            .post_reply(&format!("/stock/item/create/{price}"))
            .await;
        body["item_id"].as_str().expect("item_id").to_owned()
    }

    pub async fn create_user(&self) -> String {
        let body = self.post_reply("/payment/create_user").await;
        body["user_id"].as_str().expect("user_id").to_owned()
    }

    pub async fn create_order(&self, user_id: &str) -> String {
        let body = self.post_reply(&format!("/orders/create/{user_id}")).await;
        body["order_id"].as_str().expect("order_id").to_owned()
    }

    /// A new user holding `credit`.
    pub async fn user_with_credit(&self, credit: i64) -> String {
        let user = self.create_user().await;
        self.ok(&format!("/payment/add_funds/{user}/{credit}"))
            .await;
        user
    }

    /// A new item priced `price` with `stock` in stock.
    pub async fn item_in_stock(&self, price: i64, stock: i64) -> String {
        let item = self.create_item(price).await;
        self.ok(&format!("/stock/add/{item}/{stock}")).await;
        item
    }

    /// A new order of `user` holding `(item, quantity)` of each of `items`.
    pub async fn order_of(&self, user: &str, items: &[(&str, i64)]) -> String {
        let order = self.create_order(user).await;
        for (item, quantity) in items {
            self.ok(&format!("/orders/addItem/{order}/{item}/{quantity}"))
                .await;
        }
        order
    }

    pub async fn ok(&self, path: &str) {
        let (status, body) = self.post(path).await;
        assert!(status.is_success(), "POST {path}: {status} {body}");
    }

    pub async fn item(&self, id: &str) -> Item {
        self.get_json(&format!("/stock/find/{id}")).await
    }

    pub async fn user(&self, id: &str) -> User {
        self.get_json(&format!("/payment/find_user/{id}")).await
    }

    pub async fn order(&self, id: &str) -> Order {
        self.get_json(&format!("/orders/find/{id}")).await
    }

    /// Starts a checkout in the background (for a test that crashes something meanwhile).
    pub fn spawn_checkout(&self, order_id: &str) -> tokio::task::JoinHandle<StatusCode> {
        let api = self.clone();
        let order_id = order_id.to_owned();
        tokio::spawn(async move { api.checkout(&order_id).await })
    }

    pub async fn checkout(&self, order_id: &str) -> StatusCode {
        self.post(&format!("/orders/checkout/{order_id}")).await.0
    }
}

/// Direct database access for assertions.
pub async fn connect(system: &System, service: Service) -> PgConnection {
    PgConnection::connect(&system.database_url(service))
        .await
        .unwrap_or_else(|error| panic!("connect to {} database: {error}", service.name()))
}

/// The number `sql` returns on `service`'s database (NULL as 0).
pub async fn scalar_i64(system: &System, service: Service, sql: &str) -> i64 {
    system.scalar_i64(service, sql).await
}

/// Prepared transactions left on every database of the system.
pub async fn prepared_count(system: &impl DatabaseReader) -> i64 {
    let mut total = 0;
    for service in Service::ALL {
        total += system
            .scalar_i64(service, "select count(*) from pg_prepared_xacts")
            .await;
    }
    total
}

/// Waits until no database holds a prepared transaction.
pub async fn wait_nothing_prepared(system: &impl DatabaseReader, limit: Duration) {
    wait_until("no prepared transaction left", limit, || async {
        prepared_count(system).await == 0
    })
    .await;
}

/// The consistency scenario (see [`Consistency`]) populated by 32 concurrent clients.
pub async fn consistency(api: &Api) -> Consistency {
    Consistency::populate(api.client(), 32, |_| {})
        .await
        .unwrap_or_else(|error| panic!("populating the consistency scenario: {error:#}"))
}

/// A run of the consistency scenario on a system that ran others before (the HA and the
/// compose tests share one system among their cases): its checkouts under way in the
/// background, and what was paid before it, so that its checks count only its own.
pub struct ConsistencyRun {
    pub scenario: Consistency,
    pub earlier: Paid,
    /// When the checkouts began (after the scenario was populated).
    pub started: Instant,
    checkouts: Option<tokio::task::JoinHandle<Vec<(String, StatusCode)>>>,
}

impl ConsistencyRun {
    /// Populates the scenario (stock and credit reset), reads what is paid already, and
    /// starts checking its orders out with `in_flight` concurrent requests.
    pub async fn start(system: &impl DatabaseReader, api: &Api, in_flight: usize) -> Self {
        let scenario = consistency(api).await;
        let earlier = Paid::read(system).await;
        let started = Instant::now();
        let checkouts = tokio::spawn({
            let api = api.clone();
            let orders = scenario.orders.clone();
            async move { run_checkouts(&api, &orders, in_flight).await }
        });
        Self {
            scenario,
            earlier,
            started,
            checkouts: Some(checkouts),
        }
    }

    /// Waits until ten of the run's orders are paid: the moment to inject a fault.
    pub async fn wait_under_way(&self, system: &impl DatabaseReader, what: &str, limit: Duration) {
        wait_until(&format!("{what}: the run is under way"), limit, || async {
            system
                .scalar_i64(Service::Order, "select count(*) from orders where paid")
                .await
                >= self.earlier.orders + 10
        })
        .await;
    }

    /// Waits for every checkout's reply; each order is answered once.
    pub async fn replies(&mut self) -> Vec<(String, StatusCode)> {
        let checkouts = self.checkouts.take().expect("the replies are read once");
        let results = checkouts.await.expect("checkout run");
        assert_eq!(
            results.len(),
            self.scenario.orders.len(),
            "one reply an order"
        );
        results
    }

    /// [`assert_checkouts_exact_since`] for this run's replies.
    pub async fn assert_exact(
        &self,
        system: &impl DatabaseReader,
        api: &Api,
        results: &[(String, StatusCode)],
    ) {
        assert_checkouts_exact_since(
            system,
            api.client(),
            results,
            CONSISTENCY_STOCK,
            CONSISTENCY_USERS,
            &self.earlier,
        )
        .await;
    }
}

impl Drop for ConsistencyRun {
    /// A run given up (its case failed) stops checking out, so that it cannot change the
    /// books of the cases after it.
    fn drop(&mut self) {
        if let Some(checkouts) = self.checkouts.take() {
            checkouts.abort();
        }
    }
}

/// Checks out `orders` with `in_flight` concurrent clients.
pub async fn run_checkouts(
    api: &Api,
    orders: &[String],
    in_flight: usize,
) -> Vec<(String, StatusCode)> {
    let api = api.clone();
    concurrently(orders, in_flight, move |order| {
        let api = api.clone();
        async move {
            let status = api.checkout(&order).await;
            (order, status)
        }
    })
    .await
}

/// Runs `work` on every order with `in_flight` concurrent workers, each taking the next order
/// once it is done with one; the results in the order they finished.
async fn concurrently<T, F, Fut>(orders: &[String], in_flight: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(orders.to_vec()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let queue = queue.clone();
        let work = work.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            loop {
                let Some(order) = queue.lock().await.pop() else {
                    return results;
                };
                results.push(work(order).await);
            }
        });
    }
    let mut results = Vec::new();
    while let Some(done) = workers.join_next().await {
        results.extend(done.expect("checkout worker"));
    }
    results
}

/// The coordinators' failpoint variable (`coordinator/src/failpoint.rs`).
pub const FAILPOINT: &str = "COORDINATOR_FAILPOINT";

/// A user with 100 credit, an item priced 3 with 100 in stock, and an unpaid order of two of
/// that item (total 6).
pub async fn order_of_two(api: &Api) -> OrderOfTwo {
    let user = api.user_with_credit(100).await;
    let item = api.item_in_stock(3, 100).await;
    let order = api.order_of(&user, &[(&item, 2)]).await;
    OrderOfTwo { user, item, order }
}

/// What [`order_of_two`] made.
pub struct OrderOfTwo {
    pub user: String,
    pub item: String,
    pub order: String,
}

impl OrderOfTwo {
    /// Asserts the order paid once: its two units sold and its 6 charged.
    pub async fn assert_paid_once(&self, api: &Api) {
        self.assert_settled(api, true, "").await;
    }

    /// Asserts the order paid with its two units sold and 6 charged when `paid`, else unpaid
    /// with nothing sold or charged; `context` heads the failure.
    pub async fn assert_settled(&self, api: &Api, paid: bool, context: &str) {
        let (stock, credit) = if paid { (98, 94) } else { (100, 100) };
        assert_eq!(api.order(&self.order).await.paid, paid, "{context}: paid");
        assert_eq!(api.item(&self.item).await.stock, stock, "{context}: stock");
        assert_eq!(
            api.user(&self.user).await.credit,
            credit,
            "{context}: credit"
        );
    }
}

/// Claims unpaid `order` for transaction `txid` straight on the order database, as an order
/// instance does before handing the transaction over, with a deadline a minute away.
pub async fn claim(db: &mut PgConnection, order: &str, txid: uuid::Uuid) {
    let deadline = epoch_ms(60_000);
    let claimed = sqlx::query(
        "update orders set checkout_txid = $2, checkout_deadline = $3 where id = $1 and not paid",
    )
    .bind(order)
    .bind(txid)
    .bind(deadline)
    .execute(db)
    .await
    .unwrap_or_else(|error| panic!("claim {order}: {error}"));
    assert_eq!(claimed.rows_affected(), 1, "{order} claimed");
}

/// Milliseconds since the epoch, `offset_ms` from now.
pub fn epoch_ms(offset_ms: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after the epoch");
    now.as_millis() as i64 + offset_ms
}

/// The sum of the samples of counter `metric` on process `name`'s `/metrics` whose labels
/// include `labels` (`key="value"` text, or empty for every sample).
pub async fn metric_sum(system: &System, name: &str, metric: &str, labels: &str) -> f64 {
    let url = system
        .instance_url(name)
        .unwrap_or_else(|| panic!("no process {name}"));
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|error| panic!("{name}'s metrics: {error}"))
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            (series_name == metric && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// True if coordinator process `name` answers its health check.
pub async fn coordinator_healthy(system: &System, name: &str) -> bool {
    let Some(url) = system.instance_url(name) else {
        return false;
    };
    reqwest::get(format!("{url}/health"))
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Restarts every coordinator with `failpoint` armed, waits until they serve, and pauses their
/// restarts so that one that exits at its failpoint stays down. Both are armed because the
/// order service may give a checkout to either.
pub async fn arm_coordinator_failpoint(system: &System, failpoint: &str) {
    let supervisor = system.supervisor();
    for name in system.processes(Service::Coordinator) {
        supervisor
            .set_env(&name, FAILPOINT, Some(failpoint))
            .expect("set env");
        supervisor.stop(&name).expect("stop coordinator");
        supervisor.start(&name).expect("start coordinator");
    }
    for name in system.processes(Service::Coordinator) {
        wait_until(
            &format!("armed {name} healthy"),
            Duration::from_secs(30),
            || coordinator_healthy(system, &name),
        )
        .await;
        supervisor.pause_restarts(&name).expect("pause restarts");
    }
}

/// Waits until an armed coordinator that is running now has exited at its failpoint; returns
/// its name.
pub async fn wait_coordinator_crashed(system: &System) -> String {
    let supervisor = system.supervisor();
    let running: Vec<String> = system
        .processes(Service::Coordinator)
        .into_iter()
        .filter(|name| supervisor.pid(name).expect("pid").is_some())
        .collect();
    let down = || {
        running
            .iter()
            .find(|name| supervisor.pid(name).expect("pid").is_none())
            .cloned()
    };
    wait_until(
        "a coordinator crashed at its failpoint",
        Duration::from_secs(30),
        || async { down().is_some() },
    )
    .await;
    down().expect("a crashed coordinator")
}

/// Keeps every coordinator but `coordinator-1` down, for a test of what happens once no
/// coordinator runs: the checkout goes to `coordinator-1`, and when that one crashes no live
/// peer finishes its transactions before the test has looked. Returns `coordinator-1`.
pub async fn keep_peer_coordinators_down(system: &System) -> String {
    let coordinators = system.processes(Service::Coordinator);
    for name in &coordinators[1..] {
        system
            .keep_down(name, Duration::from_secs(10))
            .await
            .unwrap_or_else(|error| panic!("keep {name} down: {error}"));
    }
    coordinators[0].clone()
}

/// Arms every coordinator to exit right after forcing its commit decision, keeps all but
/// the one it goes to down (see [`keep_peer_coordinators_down`]), checks `order` out and waits
/// until that coordinator has exited: the transaction is decided and in doubt everywhere, with
/// no coordinator running. Returns the checkout, still waiting for its reply.
pub async fn crash_after_the_decision_alone(
    system: &System,
    api: &Api,
    order: &str,
) -> tokio::task::JoinHandle<StatusCode> {
    arm_coordinator_failpoint(system, "after_decision").await;
    keep_peer_coordinators_down(system).await;
    let checkout = api.spawn_checkout(order);
    wait_coordinator_crashed(system).await;
    checkout
}

/// Starts every coordinator again with its failpoint disarmed (a running one is restarted:
/// its environment is read at start), restarted again whenever it exits.
pub fn restart_coordinator_clean(system: &System) {
    let supervisor = system.supervisor();
    for name in system.processes(Service::Coordinator) {
        supervisor
            .set_env(&name, FAILPOINT, None)
            .expect("clear env");
        if supervisor.pid(&name).expect("pid").is_some() {
            supervisor.stop(&name).expect("stop coordinator");
        }
        supervisor.start(&name).expect("start coordinator");
    }
}

/// Serializes the tests that start a whole system and load it hard (the fault cases): on two
/// cores, two such systems at once would measure each other. Hold the guard for the test.
pub async fn one_loaded_system_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Prepared transactions on every database, or `None` while one of them does not answer
/// (a database restarting after its postmaster was killed).
pub async fn prepared_count_now(system: &System) -> Option<i64> {
    let mut total = 0;
    for service in Service::ALL {
        let count = async {
            let mut connection = PgConnection::connect(&system.database_url(service)).await?;
            sqlx::query_scalar::<_, i64>("select count(*) from pg_prepared_xacts")
                .fetch_one(&mut connection)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), count).await {
            Ok(Ok(count)) => total += count,
            _ => return None,
        }
    }
    Some(total)
}

/// One try of a request, as the client saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Instant,
    pub ended: Instant,
    /// The reply's status, or the transport error (connection refused or reset, a reply cut
    /// off) that reached the client instead.
    pub reply: Result<StatusCode, String>,
}

/// A checkout as a client that retries connection errors at once saw it: every attempt, the
/// last one's reply being what counts.
#[derive(Debug, Clone)]
pub struct TriedCheckout {
    pub order: String,
    pub attempts: Vec<Attempt>,
}

impl TriedCheckout {
    /// The reply that counts: the last attempt's status, or `None` if even that one was a
    /// connection error.
    pub fn status(&self) -> Option<StatusCode> {
        self.attempts.last()?.reply.as_ref().ok().copied()
    }

    /// When the client had its answer.
    pub fn ended(&self) -> Option<Instant> {
        self.attempts.last().map(|attempt| attempt.ended)
    }

    /// The attempts that ended in a connection error.
    pub fn connection_errors(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts
            .iter()
            .filter(|attempt| attempt.reply.is_err())
    }
}

/// Tries a request a connection error cost this many times in all.
pub const ATTEMPTS: usize = 3;

impl Api {
    /// POST /orders/checkout/{order}, retried at once after a connection error, at most
    /// [`ATTEMPTS`] tries (a client of a gateway that lost a process does just that).
    ///
    /// Every attempt opens its own connection. With a pool, an attempt could be handed an idle
    /// connection to a gateway process killed before the attempt began, whose close the pool
    /// had not yet seen; its error would then belong to the kill, yet start after it. A fresh
    /// connection opened after a process is gone can only reach a live one.
    pub async fn checkout_retrying(&self, order: &str) -> TriedCheckout {
        let url = format!("{}/orders/checkout/{order}", self.base);
        let mut attempts = Vec::new();
        for _ in 0..ATTEMPTS {
            let started = Instant::now();
            let reply = match self.unpooled.http.post(&url).send().await {
                // The body is read so that a reply cut off counts as the error it is.
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|_| status)
                }
                Err(error) => Err(error),
            };
            let reply = reply.map_err(|error| launcher::supervisor::error_chain(&error));
            let done = reply.is_ok();
            attempts.push(Attempt {
                started,
                ended: Instant::now(),
                reply,
            });
            if done {
                break;
            }
        }
        TriedCheckout {
            order: order.to_owned(),
            attempts,
        }
    }
}

/// Checks out `orders` with `in_flight` concurrent clients that retry connection errors.
pub async fn run_checkouts_retrying(
    api: &Api,
    orders: &[String],
    in_flight: usize,
) -> Vec<TriedCheckout> {
    let api = api.clone();
    concurrently(orders, in_flight, move |order| {
        let api = api.clone();
        async move { api.checkout_retrying(&order).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::Cases;

    #[tokio::test]
    async fn every_case_runs_and_every_failure_is_listed() {
        let mut cases = Cases::default();
        let mut ran = Vec::new();
        for name in ["first", "second", "third"] {
            let result = cases
                .run(name, async {
                    ran.push(name);
                    tokio::task::yield_now().await;
                    assert_ne!(name, "second", "the second case fails");
                    name.len()
                })
                .await;
            assert_eq!(result.is_some(), name != "second");
        }
        cases.fail("a check over all cases".to_owned());
        assert_eq!(ran, ["first", "second", "third"]);
        let listed = std::panic::catch_unwind(move || cases.assert_all_passed())
            .expect_err("two failures fail the test");
        let message = listed
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(message.starts_with("2 failed:"), "{message}");
        assert!(message.contains("second: assertion"), "{message}");
        assert!(message.contains("a check over all cases"), "{message}");
    }
}
