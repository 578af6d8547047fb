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

/// Renders the console in headless Chromium, keeps a screenshot, and reads the DOM.
async fn the_console_shows_the_committed_count(monitoring: &Monitoring, committed: usize) {
    let url = monitoring.console_url();
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("checkout-console.png");
    let _ = std::fs::remove_file(&screenshot);
    let dom = chromium(&[
        "--dump-dom".to_owned(),
        "--virtual-time-budget=5000".to_owned(),
        url.clone(),
    ])
    .await;
    let shown = dom
        .split("id=\"committed\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map(str::trim);
    assert_eq!(shown, Some(committed.to_string().as_str()), "{dom}");
    for heading in ["2PC phase times", "In doubt", "HAProxy backends up"] {
        assert!(dom.contains(heading), "{heading} missing");
    }
    assert!(!dom.contains("error executing template"), "{dom}");
    chromium(&[
        format!("--screenshot={}", screenshot.display()),
        "--window-size=1400,2000".to_owned(),
        "--virtual-time-budget=5000".to_owned(),
        "--hide-scrollbars".to_owned(),
        url,
    ])
    .await;
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        screenshot.display()
    );
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

#[tokio::test]
async fn a_branch_left_prepared_fires_the_in_doubt_alert_while_the_coordinators_are_down() {
    let (system, monitoring) = start_monitored().await;
    let api = Api::new(&system);
    let prometheus = Prometheus::new(&monitoring);
    let (_user, _item, order) = order_of_two(&api).await;
    prometheus
        .wait_value("max(twopc_prepared_branches{database=\"order\"})", 0.0)
        .await;

    // A coordinator exits right after the order branch voted yes, and stays down; its peer is
    // down too, or it would roll the branch back before the alert fires.
    arm_coordinator_failpoint(&system, "after_first_prepare").await;
    keep_peer_coordinators_down(&system).await;
    let checkout = api.spawn_checkout(&order);
    wait_coordinator_crashed(&system).await;

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
    assert_eq!(
        prometheus
            .value("max(twopc_prepared_branches{database=\"order\"})")
            .await,
        Some(1.0)
    );

    // The restarted coordinators' recovery rolls the branch back; the alert resolves. The
    // order service may meanwhile have retried the checkout, which then commits: either
    // reply is right if it tells the truth.
    restart_coordinator_clean(&system);
    let status = checkout.await.expect("checkout task");
    assert!(
        status == StatusCode::OK || status.is_client_error(),
        "{status}"
    );
    wait_nothing_prepared(&system, Duration::from_secs(30)).await;
    assert_eq!(
        api.order(&order).await.paid,
        status == StatusCode::OK,
        "{status}"
    );
    wait_until("the in-doubt alert to resolve", SCRAPED, || async {
        let alerts = prometheus.alerts().await;
        !in_doubt(&alerts, "firing") && !in_doubt(&alerts, "pending")
    })
    .await;
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
    // Consoles: the string after `query ` or `(args `, with \" unescaped.
    for path in ["prometheus/consoles/checkout.html"] {
        let text = read(path);
        for start in ["query \"", "(args \""] {
            for piece in text.split(start).skip(1) {
                let mut expr = String::new();
                let mut chars = piece.chars();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => expr.extend(chars.next()),
                        '"' => break,
                        c => expr.push(c),
                    }
                }
                queries.push((path.to_owned(), expr));
            }
        }
    }
    assert!(queries.len() > 40, "found only {} queries", queries.len());
    queries
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
