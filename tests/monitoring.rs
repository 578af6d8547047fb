//! Monitoring, end to end: the whole system with Debian's real Prometheus on the project's
//! rendered configuration (1 s scrapes, a 2 s in-doubt threshold), checked through
//! Prometheus's HTTP API, the console rendered by headless Chromium, and an alert that fires
//! for a branch really left prepared.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use launcher::monitoring::{Monitoring, MonitoringConfig, ScrapeTargets};
use reqwest::StatusCode;
use serde_json::Value;
use system_tests::*;

/// How long a value may take to reach Prometheus: a sampling second, a scrape second, slack.
const SCRAPED: Duration = Duration::from_secs(30);
/// Metric families exported by processes this test does not run (high-availability mode), or
/// synthesized by Prometheus itself.
const NOT_SCRAPED_HERE: [&str; 2] = ["patroni_", "etcd_"];
const SYNTHETIC: [&str; 2] = ["ALERTS", "up"];

async fn start_monitored() -> (System, Monitoring) {
    let system = start().await;
    let config = MonitoringConfig::for_tests().expect("monitoring config");
    let targets = ScrapeTargets::of(&system.config().ports);
    let monitoring = Monitoring::start(&system, &config, &targets)
        .await
        .unwrap_or_else(|error| panic!("prometheus did not start: {error}"));
    (system, monitoring)
}

/// A client of Prometheus's HTTP API.
struct Prometheus {
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn new(monitoring: &Monitoring) -> Self {
        Prometheus {
            url: monitoring.url().to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector of `expr`: labels and value of each series.
    async fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        series
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).expect("labels");
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (labels, value.expect("a sample value"))
            })
            .collect()
    }

    /// The single value of a scalar-like `expr` (a `sum(...)`), if it has one.
    async fn value(&self, expr: &str) -> Option<f64> {
        self.query(expr).await.first().map(|(_, value)| *value)
    }

    async fn wait_value(&self, expr: &str, expected: f64) {
        let mut last = None;
        let deadline = std::time::Instant::now() + SCRAPED;
        while std::time::Instant::now() < deadline {
            last = self.value(expr).await;
            if last == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{expr}: expected {expected}, Prometheus has {last:?}");
    }

    /// The samples of `expr`'s single series from `start` to `end` (Unix seconds), one a
    /// second: what a graph of it draws.
    async fn range(&self, expr: &str, start: f64, end: f64) -> Vec<(f64, f64)> {
        let (start, end) = (format!("{start:.3}"), format!("{end:.3}"));
        let query = [
            ("query", expr),
            ("start", &start),
            ("end", &end),
            ("step", "1"),
        ];
        let data = self.get("/api/v1/query_range", &query).await;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        assert!(series.len() <= 1, "{expr}: more than one series");
        let values = series
            .first()
            .and_then(|s| s["values"].as_array().cloned())
            .unwrap_or_default();
        values
            .iter()
            .map(|v| {
                let value = v[1].as_str().and_then(|v| v.parse().ok());
                (v[0].as_f64().expect("a time"), value.expect("a value"))
            })
            .collect()
    }

    /// Every metric name Prometheus has stored.
    async fn names(&self) -> BTreeSet<String> {
        let data = self.get("/api/v1/label/__name__/values", &[]).await;
        serde_json::from_value(data).expect("names")
    }

    /// `(alertname, state, labels)` of every pending or firing alert.
    async fn alerts(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let data = self.get("/api/v1/alerts", &[]).await;
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .iter()
            .map(|a| {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(a["labels"].clone()).expect("labels");
                let name = labels.get("alertname").cloned().unwrap_or_default();
                (name, a["state"].as_str().unwrap_or("").to_owned(), labels)
            })
            .collect()
    }
}

/// What the test made happen, by checkout status.
struct Traffic {
    committed: usize,
    already_paid: usize,
    rejected: usize,
}

/// Three checkouts that commit, one repeated (already paid), one out of stock, one without
/// credit.
async fn checkouts(api: &Api) -> Traffic {
    let item = api.create_item(10).await;
    api.ok(&format!("/stock/add/{item}/3")).await;
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/1000")).await;
    let mut paid = Vec::new();
    for _ in 0..3 {
        let order = api.create_order(&user).await;
        api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
        assert_eq!(api.checkout(&order).await, StatusCode::OK);
        paid.push(order);
    }
    assert_eq!(api.checkout(&paid[0]).await, StatusCode::OK, "already paid");
    let order = api.create_order(&user).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(api.checkout(&order).await, StatusCode::BAD_REQUEST, "stock");
    let poor = api.create_user().await;
    let order = api.create_order(&poor).await;
    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
    assert_eq!(
        api.checkout(&order).await,
        StatusCode::BAD_REQUEST,
        "credit"
    );
    Traffic {
        committed: 3,
        already_paid: 1,
        rejected: 2,
    }
}

#[tokio::test]
async fn prometheus_counts_every_checkout_and_the_console_and_dashboards_show_exported_series() {
    let (system, monitoring) = start_monitored().await;
    let api = Api::new(&system);
    let prometheus = Prometheus::new(&monitoring);
    // Two rounds with a scrape before each, so rates and percentiles over the last minute
    // have samples on both sides of some checkouts.
    // Both instances of everything, both coordinators and both gateway processes.
    for job in ["order", "coordinator", "haproxy"] {
        prometheus
            .wait_value(&format!("count(up{{job=\"{job}\"}} == 1)"), 2.0)
            .await;
    }
    let first = checkouts(&api).await;
    prometheus
        .wait_value(
            "sum(checkouts_total{outcome=\"committed\"})",
            first.committed as f64,
        )
        .await;
    let second = checkouts(&api).await;
    let traffic = Traffic {
        committed: first.committed + second.committed,
        already_paid: first.already_paid + second.already_paid,
        rejected: first.rejected + second.rejected,
    };
    let rounds = 2.0;

    // Checkouts by outcome, as the order service counted them.
    let outcome = |o: &str| format!("sum(checkouts_total{{outcome=\"{o}\"}})");
    prometheus
        .wait_value(&outcome("committed"), traffic.committed as f64)
        .await;
    prometheus
        .wait_value(&outcome("already_paid"), traffic.already_paid as f64)
        .await;
    prometheus
        .wait_value(&outcome("rejected"), traffic.rejected as f64)
        .await;
    prometheus
        .wait_value(
            "sum(checkouts_total{outcome=\"rejected\",reason=\"out_of_stock\"})",
            rounds,
        )
        .await;
    prometheus.wait_value(&outcome("failed"), 0.0).await;
    // The same checkouts as HTTP replies, by status.
    let replies = |status: u16| {
        format!("sum(http_requests_total{{job=\"order\",route=~\"/orders/checkout/.*\",status=\"{status}\"}})")
    };
    prometheus
        .wait_value(
            &replies(200),
            (traffic.committed + traffic.already_paid) as f64,
        )
        .await;
    prometheus
        .wait_value(&replies(400), traffic.rejected as f64)
        .await;
    // The coordinator's view: transactions, phases, votes. The repeated checkout of a paid
    // order never reaches it; the rejected ones prepare the order branch first.
    let transactions = traffic.committed + traffic.rejected;
    // Rates and percentiles are defined (the console shows numbers, not NaN).
    let p95 = "histogram_quantile(0.95, sum by (le) (rate(checkout_duration_seconds_bucket[1m])))";
    wait_until("a checkout latency percentile", SCRAPED, || async {
        prometheus.value(p95).await.is_some_and(f64::is_finite)
    })
    .await;
    prometheus
        .wait_value(
            "sum(twopc_transactions_total{outcome=\"committed\"})",
            traffic.committed as f64,
        )
        .await;
    prometheus
        .wait_value(
            "sum(twopc_phase_duration_seconds_count{phase=\"prepare\",participant=\"order\"})",
            transactions as f64,
        )
        .await;
    prometheus
        .wait_value(
            "sum(twopc_phase_duration_seconds_count{phase=\"phase_two\",participant=\"stock\"})",
            traffic.committed as f64,
        )
        .await;
    prometheus
        .wait_value(
            "sum(twopc_votes_total{participant=\"stock\",vote=\"no\"})",
            rounds,
        )
        .await;
    prometheus
        .wait_value(
            "sum(twopc_votes_total{participant=\"payment\",vote=\"no\"})",
            rounds,
        )
        .await;
    // Series that must exist before their first event, and the new database gauges.
    prometheus.wait_value("sum(twopc_hazards_total)", 0.0).await;
    // Both actions, exported by each of the two coordinators.
    prometheus
        .wait_value(
            "count(twopc_recovery_actions_total{action=~\"commit|rollback\"})",
            4.0,
        )
        .await;
    prometheus
        .wait_value("max(twopc_prepared_branches{database=\"order\"})", 0.0)
        .await;
    prometheus
        .wait_value("max(db_pool_max_connections{job=\"stock\"})", 16.0)
        .await;
    prometheus
        .wait_value(
            "count(haproxy_backend_active_servers{proxy=\"order\"} == 2)",
            2.0,
        )
        .await;

    every_queried_metric_is_exported(&prometheus).await;
    the_console_shows_the_committed_count(&monitoring, traffic.committed).await;
}

/// Every metric name in an alert rule, a Grafana panel or a console query is one Prometheus
/// scraped from the running system (high-availability exporters excepted).
async fn every_queried_metric_is_exported(prometheus: &Prometheus) {
    // Histograms with observations and HAProxy's families are there by now.
    let exported = prometheus.names().await;
    let mut missing = BTreeMap::new();
    for (source, expr) in queries() {
        for name in metric_names(&expr) {
            let known = exported.contains(&name)
                || SYNTHETIC.contains(&name.as_str())
                || NOT_SCRAPED_HERE.iter().any(|p| name.starts_with(p));
            if !known {
                missing.insert(name, format!("{source}: {expr}"));
            }
        }
    }
    assert!(missing.is_empty(), "not exported: {missing:#?}");
}

/// The console, healthy and in numbers: the committed count on the first screen, every
/// section there, the verdict healthy.
async fn the_console_shows_the_committed_count(monitoring: &Monitoring, committed: usize) {
    let dom = console_dom(monitoring).await;
    assert_eq!(
        shown(&dom, "committed"),
        Some(committed.to_string().as_str()),
        "{dom}"
    );
    assert_eq!(shown(&dom, "coordinators"), Some("2/2"), "{dom}");
    for heading in [
        "Checkouts per second by outcome",
        "Checkout latency",
        "2PC phase times by participant",
        "In doubt",
        "Oldest prepared branch",
        "Recovery actions",
        "Instances up",
        "HAProxy backends",
        "Database pools",
        "Primary of each database",
        "Standby lag",
    ] {
        assert!(dom.contains(heading), "{heading} missing");
    }
    assert!(dom.contains("verdict ok"), "verdict: {dom}");
}

/// The console's DOM after its scripts ran, checked for template errors.
async fn console_dom(monitoring: &Monitoring) -> String {
    let dom = chromium(&[
        "--dump-dom".to_owned(),
        "--virtual-time-budget=5000".to_owned(),
        monitoring.console_url(),
    ])
    .await;
    assert!(!dom.contains("error executing template"), "{dom}");
    dom
}

/// The text of the element with `id` in `dom`, trimmed.
fn shown<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    dom.split(&format!("id=\"{id}\">"))
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(str::trim)
}

/// Graphs the console cannot draw without `--ha` (no Patroni here): primary and standby lag.
const HA_ONLY_GRAPHS: usize = 2;

/// The console with its graphs over the last `range_seconds` (rate windows of 5 s for the
/// 1 s scrapes): checks that every graph but the high-availability ones drew its series, and
/// keeps a screenshot in `target/test-artifacts/dashboard.png`; with `WDM_BLESS=1` also in
/// `docs/dashboard.png`, the README's picture (`scripts/dashboard-screenshot`). Returns the
/// DOM.
async fn screenshot_console(monitoring: &Monitoring, range_seconds: u64) -> String {
    let url = format!(
        "{}?window=5s#pctc%7B%22duration%22%3A{range_seconds}%2C%22endTime%22%3A0%7D",
        monitoring.console_url()
    );
    let budget = "--virtual-time-budget=10000".to_owned();
    let dom = chromium(&["--dump-dom".to_owned(), budget.clone(), url.clone()]).await;
    assert!(!dom.contains("error executing template"), "{dom}");
    assert!(!dom.contains("Error loading data"), "{dom}");
    let graphs = dom.matches("<div class=\"graph\">").count();
    let drawn = dom.matches("<svg").count();
    assert!(graphs >= 11, "{graphs} graphs: {dom}");
    assert!(
        drawn >= graphs - HA_ONLY_GRAPHS,
        "{drawn} of {graphs} graphs drawn: {dom}"
    );

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(&[
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1400,1850".to_owned(),
        budget,
        "--hide-scrollbars".to_owned(),
        url,
    ])
    .await;
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 50_000,
        "screenshot {} is {size} bytes",
        screenshot.display()
    );
    if std::env::var_os("WDM_BLESS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(&screenshot, &docs).expect("copy the screenshot to docs/");
    }
    dom
}

/// Debian's headless Chromium with `args`; its stdout.
async fn chromium(args: &[String]) -> String {
    let profile = launcher::ScratchDir::new("chromium").expect("profile dir");
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("chromium finished in time")
        .expect("chromium runs (apt-get install chromium)");
    assert!(
        output.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `target/test-artifacts` (or under `$CARGO_TARGET_DIR`).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-artifacts")
}

/// Checkouts of fresh orders by `workers` clients until `stop`, each reply kept with its
/// order: the load a fault is injected into.
fn spawn_load(
    api: &Api,
    user: &str,
    item: &str,
    workers: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, StatusCode)>>> {
    (0..workers)
        .map(|_| {
            let (api, user, item, stop) =
                (api.clone(), user.to_owned(), item.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut replies = Vec::new();
                while !*stop.borrow() {
                    let order = api.create_order(&user).await;
                    api.ok(&format!("/orders/addItem/{order}/{item}/1")).await;
                    let status = api.checkout(&order).await;
                    replies.push((order, status));
                }
                replies
            })
        })
        .collect()
}

/// Seconds since the Unix epoch, Prometheus's time axis.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The samples in `[from, to)` of a range query's single series (times as Prometheus
/// returns them, to the millisecond).
fn between(samples: &[(f64, f64)], from: f64, to: f64) -> Vec<f64> {
    let (from, to) = (from - 0.001, to - 0.001);
    samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, v)| *v)
        .collect()
}

/// The longest run of consecutive equal values, in samples.
fn longest_flat_run(values: &[f64]) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for pair in values.windows(2) {
        run = if pair[0] == pair[1] { run + 1 } else { 0 };
        longest = longest.max(run + 1);
    }
    longest
}

/// The run a dashboard is for: checkouts under load with `coordinator-2` down, then
/// `coordinator-1` killed (SIGKILL, kept down) while one checkout has its order and payment
/// branches prepared and its stock branch waiting for a row lock the test holds. With no
/// coordinator left, checkouts stop committing and the branches stay in doubt until the alert
/// fires; then both coordinators come back, recovery rolls the branches back and the rate
/// recovers. The console is rendered during the outage and screenshotted after it, and
/// Prometheus's history of the graphed series shows the dip, the in-doubt branches and the
/// recovery.
#[tokio::test]
async fn a_killed_coordinator_shows_as_a_dip_and_in_doubt_branches_that_fire_the_alert_and_drain() {
    let (system, monitoring) = start_monitored().await;
    let api = Api::new(&system);
    let prometheus = Prometheus::new(&monitoring);
    let processes = Service::ALL
        .iter()
        .map(|service| system.processes(*service).len())
        .sum::<usize>()
        + system.gateways().len();
    prometheus
        .wait_value(
            "sum(up{job=~\"order|stock|payment|coordinator|haproxy\"})",
            processes as f64,
        )
        .await;
    let user = api.create_user().await;
    api.ok(&format!("/payment/add_funds/{user}/1000000")).await;
    let item = api.create_item(1).await;
    api.ok(&format!("/stock/add/{item}/1000000")).await;
    let held = order_of_two(&api).await;
    let (held_item, held_order) = (held.item, held.order);
    let coordinators = system.processes(Service::Coordinator);
    let (killed, peer) = (&coordinators[0], &coordinators[1]);
    system
        .keep_down(peer, Duration::from_secs(10))
        .await
        .expect("peer coordinator down");

    let start = unix_now();
    let committed = "sum(checkouts_total{outcome=\"committed\"})";
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = spawn_load(&api, &user, &item, 3, stopped);
    wait_until("checkouts committing under load", SCRAPED, || async {
        prometheus.value(committed).await.unwrap_or(0.0) >= 20.0
    })
    .await;
    // Some seconds of steady load, for the graphs' "before".
    let steady = prometheus.value(committed).await.unwrap_or(0.0);
    wait_until("more checkouts committing under load", SCRAPED, || async {
        prometheus.value(committed).await.unwrap_or(0.0) >= steady + 40.0
    })
    .await;

    // Park a checkout between its votes: its stock branch waits for the held row lock, so
    // its order and payment branches are prepared when the coordinator dies.
    let mut lock = connect(&system, Service::Stock).await;
    let mut held = sqlx::Connection::begin(&mut lock).await.expect("begin");
    sqlx::query("select stock from items where id = $1 for update")
        .bind(&held_item)
        .execute(&mut *held)
        .await
        .expect("lock the item");
    let parked = api.spawn_checkout(&held_order);
    wait_until("the stock branch waiting for the lock", SCRAPED, || async {
        scalar_i64(
            &system,
            Service::Stock,
            "select count(*) from pg_locks where not granted",
        )
        .await
            > 0
    })
    .await;
    let kill = unix_now();
    system
        .keep_down(killed, Duration::from_secs(10))
        .await
        .expect("kill coordinator-1");
    held.rollback().await.expect("release the lock");

    let in_doubt = |alerts: &[(String, String, BTreeMap<String, String>)], state: &str| {
        alerts.iter().any(|(name, s, labels)| {
            name == "PreparedBranchInDoubt"
                && s == state
                && labels.get("database").map(String::as_str) == Some("order")
        })
    };
    wait_until("the in-doubt alert to fire", SCRAPED, || async {
        in_doubt(&prometheus.alerts().await, "firing")
    })
    .await;
    // The first screen while it fires: not healthy, the alert listed, branches in doubt.
    let dom = console_dom(&monitoring).await;
    assert!(
        dom.contains("verdict bad"),
        "verdict while the alert fires: {dom}"
    );
    assert!(
        dom.contains("PreparedBranchInDoubt"),
        "alert not listed: {dom}"
    );
    assert_ne!(shown(&dom, "prepared"), Some("0"), "{dom}");

    let back = unix_now();
    for name in [killed, peer] {
        system
            .bring_back(name, Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| panic!("bring back {name}: {error}"));
    }
    // Recovered: the graphed rate (with the test's 5 s window) back to half its level before.
    let rate = "sum(rate(checkouts_total{outcome=\"committed\"}[5s]))";
    let peak_before = prometheus
        .range(rate, start, kill)
        .await
        .into_iter()
        .fold(0.0, |peak, (_, v)| f64::max(peak, v));
    wait_until("the checkout rate to recover", SCRAPED, || async {
        prometheus.value(rate).await.unwrap_or(0.0) >= peak_before / 2.0
    })
    .await;
    // The load goes on until commits made after the recovery are scraped too: a recovery
    // that is quick leaves the rate's window with commits from the moment it ended only.
    let recovered = prometheus.value(committed).await.unwrap_or(0.0);
    wait_until(
        "commits after the recovery to be scraped",
        SCRAPED,
        || async { prometheus.value(committed).await.unwrap_or(0.0) >= recovered + 20.0 },
    )
    .await;
    stop.send(true).expect("stop the load");
    let mut replies = Vec::new();
    for worker in load {
        replies.extend(worker.await.expect("load worker"));
    }
    let status = parked.await.expect("parked checkout");
    replies.push((held_order.clone(), status));
    // Every reply tells the truth: a 200 is paid, anything else is not (and is no 5xx).
    for (order, status) in &replies {
        assert!(
            *status == StatusCode::OK || status.is_client_error(),
            "{order}: {status}"
        );
        assert_eq!(
            api.order(order).await.paid,
            *status == StatusCode::OK,
            "{order}: {status}"
        );
    }
    wait_nothing_prepared(&system, Duration::from_secs(30)).await;
    prometheus
        .wait_value("sum(max by (database) (twopc_prepared_branches))", 0.0)
        .await;
    prometheus
        .wait_value("sum(up{job=\"coordinator\"})", 2.0)
        .await;
    wait_until("the in-doubt alert to resolve", SCRAPED, || async {
        let alerts = prometheus.alerts().await;
        !in_doubt(&alerts, "firing") && !in_doubt(&alerts, "pending")
    })
    .await;
    let end = unix_now() + 1.0;

    // The history behind the graphs, a sample a second.
    let history = |expr: &'static str| prometheus.range(expr, start, end);
    let counted = history("sum(checkouts_total{outcome=\"committed\"})").await;
    let before = between(&counted, start, kill);
    assert!(
        before.last() > before.first(),
        "no commits before the kill: {counted:?}"
    );
    let outage = between(&counted, kill, back + 1.0);
    assert!(
        longest_flat_run(&outage) >= 3,
        "the committed count did not stop while no coordinator ran: {outage:?}"
    );
    let at_back = between(&counted, start, back).last().copied();
    let after = between(&counted, back, end);
    assert!(
        after.last().copied() > at_back,
        "no commits after the recovery: {counted:?}"
    );
    // The console's rate graph dipped (its window is 5 s here) and came back.
    let rates = prometheus.range(rate, start, end).await;
    let low = between(&rates, kill, back + 5.0)
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    assert!(
        low < peak_before / 2.0,
        "rate before {peak_before}, lowest {low}: {rates:?}"
    );
    let prepared = history("sum(max by (database) (twopc_prepared_branches))").await;
    let outage_prepared = between(&prepared, kill, back + 1.0);
    assert!(
        outage_prepared.iter().any(|v| *v >= 2.0),
        "in-doubt branches did not rise: {prepared:?}"
    );
    assert_eq!(prepared.last().map(|(_, v)| *v), Some(0.0), "{prepared:?}");
    let oldest = history("max(twopc_prepared_oldest_age_seconds)").await;
    assert!(
        between(&oldest, kill, back + 1.0).iter().any(|v| *v >= 2.0),
        "no branch aged in doubt: {oldest:?}"
    );
    let up = history("sum(up{job=\"coordinator\"})").await;
    assert!(
        between(&up, kill, back).contains(&0.0),
        "coordinators never both down: {up:?}"
    );
    assert!(
        prometheus
            .value("sum(twopc_recovery_actions_total{action=\"rollback\"})")
            .await
            .unwrap_or(0.0)
            >= 1.0,
        "the restarted coordinator's recovery rolled nothing back"
    );

    // The graphs, over the run, after it: the picture in the README.
    let range = (end - start).ceil() as u64 + 5;
    let dom = screenshot_console(&monitoring, range).await;
    assert!(
        dom.contains("verdict ok"),
        "verdict after the recovery: {dom}"
    );
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        "label_join(histogram_quantile(0.95, sum by (le, phase) (rate(a_bucket{x=~\"y|z\"}[1m]))) \
         * 1000, \"step\", \" / \", \"phase\") - on (instance) b and c offset 5m > bool 3",
    );
    assert_eq!(names, ["a_bucket", "b", "c"].map(String::from).to_vec());
}

/// Every PromQL expression of the alert rules, the Grafana dashboard and the consoles, with
/// where it comes from.
fn queries() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let mut queries = Vec::new();
    // Alert rules: `expr: ...` on one line, or `expr: >-` followed by more-indented lines.
    let alerts = read("prometheus/alerts.yml");
    let mut lines = alerts.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let mut expr = rest.trim().to_owned();
        if expr == ">-" || expr == ">" {
            expr.clear();
            while let Some(next) = lines.next_if(|l| l.len() - l.trim_start().len() > indent.len())
            {
                expr.push(' ');
                expr.push_str(next.trim());
            }
        }
        queries.push(("prometheus/alerts.yml".to_owned(), expr));
    }
    // Grafana: every target's `expr`.
    let dashboard: Value =
        serde_json::from_str(&read("grafana/dashboards/checkout.json")).expect("dashboard json");
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for panel in panels {
        for target in panel["targets"].as_array().cloned().unwrap_or_default() {
            let expr = target["expr"].as_str().expect("expr").to_owned();
            queries.push(("grafana/dashboards/checkout.json".to_owned(), expr));
        }
    }
    // Consoles (as the launcher writes them for Prometheus).
    for (name, text) in launcher::monitoring::CONSOLES {
        for expr in console_queries(text) {
            queries.push((format!("prometheus/consoles/{name}"), expr));
        }
    }
    assert!(queries.len() > 40, "found only {} queries", queries.len());
    queries
}

/// The PromQL of a console template (the conventions of `console_libraries/checkout.lib`):
/// in each `{{ ... }}` action, the string after `query`, the first argument of `wdm_value`
/// and `wdm_rows`, and the even arguments (expression, name, expression, ...) of `wdm_graph`.
fn console_queries(text: &str) -> Vec<String> {
    let mut queries = Vec::new();
    for action in text.split("{{").skip(1) {
        let action = action.split("}}").next().unwrap_or_default();
        if action.trim_start().starts_with("/*") {
            continue;
        }
        // The action's string literals, unescaped, each with the word before it.
        let mut strings = Vec::new();
        let mut chars = action.chars();
        let mut before = String::new();
        while let Some(c) = chars.next() {
            if c != '"' {
                before.push(c);
                continue;
            }
            let mut literal = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => literal.extend(chars.next()),
                    '"' => break,
                    c => literal.push(c),
                }
            }
            let word = before
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            strings.push((word, literal));
            before.clear();
        }
        let arguments = |skip: usize, step: usize| -> Vec<String> {
            strings
                .iter()
                .skip(skip)
                .step_by(step)
                .map(|(_, s)| s.clone())
                .collect()
        };
        match strings.first() {
            Some((word, name)) if word == "template" => match name.as_str() {
                "wdm_graph" => queries.extend(arguments(1, 2)),
                "wdm_value" | "wdm_rows" => queries.extend(arguments(1, usize::MAX)),
                _ => {}
            },
            _ => queries.extend(
                strings
                    .iter()
                    .filter(|(word, _)| word == "query")
                    .map(|(_, s)| s.clone()),
            ),
        }
    }
    queries
}

#[test]
fn console_queries_are_the_expressions_of_each_template_call() {
    let console = r#"{{/* "not" */}}{{ template "wdm_head" "Title" }}
{{ template "wdm_value" (args "sum(a{x=\"y\"})" "wdm_2f") }}
{{ template "wdm_graph" (args "b" "[[l]]" "c" "name") }}
{{ range query "d" | sortByLabel "l" }}{{ with printf "e{j=%q}" .Labels.j | query }}{{ end }}"#;
    assert_eq!(
        console_queries(console),
        ["sum(a{x=\"y\"})", "b", "c", "d"]
            .map(String::from)
            .to_vec()
    );
}

/// The metric names in a PromQL expression: identifiers that are not functions (followed by
/// `(`), keywords, label names (inside `{}` or the list after `by`/`on`/...), strings or
/// durations.
fn metric_names(expr: &str) -> Vec<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Aggregations may be followed by `by (...)` instead of their argument.
    const OTHER_KEYWORDS: [&str; 16] = [
        "and", "or", "unless", "bool", "offset", "sum", "min", "max", "avg", "count", "group",
        "stddev", "stdvar", "topk", "bottomk", "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut previous_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                }
                i += 1;
            }
            i += 1;
        } else if c == '(' && LABEL_LISTS.contains(&previous_word.as_str()) {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            previous_word.clear();
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`offset 5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            let is_function = next == Some(&'(') && !LABEL_LISTS.contains(&word.as_str());
            if !is_function
                && !LABEL_LISTS.contains(&word.as_str())
                && !OTHER_KEYWORDS.contains(&word.as_str())
                && !names.contains(&word)
            {
                names.push(word.clone());
            }
            previous_word = word;
        } else {
            if !c.is_whitespace() {
                previous_word.clear();
            }
            i += 1;
        }
    }
    names
}

/// Grafana's panel types this dashboard may use.
const GRAFANA_PANEL_TYPES: [&str; 4] = ["row", "stat", "timeseries", "table"];
/// Grafana's interval variables, and what promtool sees in their place.
const GRAFANA_VARIABLES: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];

/// The dashboard is what Grafana's file provisioning loads (`grafana/provisioning`,
/// mounted by docker-compose.yml): a uid, a title and a schema version; panels of known types
/// with unique ids on a 24-column grid without overlaps; every query panel and target on the
/// provisioned data source's uid, with a unique refId and an expression. And it has the
/// console's views: every console card's title is a panel's.
#[test]
fn the_grafana_dashboard_is_a_provisionable_dashboard_with_the_consoles_views() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let yaml_value = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    let datasources = read("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(yaml_value(&datasources, "type:"), ["prometheus"]);
    let uid = yaml_value(&datasources, "uid:")
        .pop()
        .expect("a data source uid");
    let providers = read("grafana/provisioning/dashboards/checkout.yml");
    let folder = yaml_value(&providers, "path:")
        .pop()
        .expect("a provider path");
    assert!(
        read("docker-compose.yml").contains(&format!("./grafana/dashboards:{folder}")),
        "docker-compose.yml mounts grafana/dashboards at the provider's path {folder}"
    );

    let dashboard: Value =
        serde_json::from_str(&read("grafana/dashboards/checkout.json")).expect("dashboard json");
    for key in ["uid", "title"] {
        assert!(
            dashboard[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "schemaVersion"
    );
    assert!(
        dashboard.get("id").is_none_or(Value::is_null),
        "a provisioned dashboard has no id"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeMap::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let kind = panel["type"].as_str().unwrap_or_default();
        assert!(GRAFANA_PANEL_TYPES.contains(&kind), "{title}: type {kind}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: id"
        );
        let grid = |key: &str| panel["gridPos"][key].as_u64().expect("gridPos") as usize;
        let (x, y, w, h) = (grid("x"), grid("y"), grid("w"), grid("h"));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos");
        for cell in (x..x + w).flat_map(|x| (y..y + h).map(move |y| (x, y))) {
            if let Some(other) = cells.insert(cell, title.to_owned()) {
                panic!("{title} overlaps {other}");
            }
        }
        if kind == "row" {
            assert_eq!(
                panel["panels"],
                serde_json::json!([]),
                "{title}: an open row"
            );
            continue;
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "{title}");
            assert!(
                refs.insert(target["refId"].as_str().expect("refId")),
                "{title}"
            );
            assert!(
                target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}"
            );
        }
    }
    let titles: BTreeSet<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for (name, console) in launcher::monitoring::CONSOLES {
        let views: Vec<&str> = console
            .split("<h2>")
            .skip(1)
            .filter_map(|rest| rest.split("</h2>").next())
            .collect();
        assert!(views.len() >= 11, "{name}: {views:?}");
        for view in views {
            assert!(
                titles.contains(view),
                "{name}'s view {view:?} is not in Grafana"
            );
        }
    }
}

/// promtool parses every expression of the alerts, the dashboard and the console: each
/// becomes a recording rule of a file `promtool check rules` checks (Grafana's interval
/// variables replaced by a duration).
#[test]
fn promtool_parses_every_dashboard_console_and_alert_expression() {
    let mut rules = String::from("groups:\n  - name: every-expression\n    rules:\n");
    for (index, (source, expr)) in queries().iter().enumerate() {
        let expr = GRAFANA_VARIABLES
            .iter()
            .fold(expr.clone(), |expr, variable| expr.replace(variable, "1m"));
        assert!(
            !expr.contains('$'),
            "{source}: an unknown variable in {expr}"
        );
        let quoted = serde_json::to_string(&expr).expect("json string");
        rules.push_str(&format!(
            "      - record: check:{index}\n        expr: {quoted}\n"
        ));
    }
    let dir = launcher::ScratchDir::new("promtool").expect("scratch dir");
    let path = dir.path().join("expressions.yml");
    std::fs::write(&path, &rules).expect("write rules");
    if let Err(error) = launcher::monitoring::check_rules(&path) {
        panic!("promtool: {error}\n{rules}");
    }
}
