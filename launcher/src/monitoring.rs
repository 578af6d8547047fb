//! Monitoring of a running system: Debian's Prometheus (package `prometheus`) scraping every
//! process's `/metrics`, evaluating the alert rules, and serving the console dashboards.
//!
//! `wdm-launcher up --monitoring` starts it on 9090 beside the `scripts/up` system; tests start
//! it on a free port with a 1 s scrape interval and a short in-doubt threshold. The
//! configuration is rendered from `prometheus/prometheus.yml.tmpl` and `alerts.yml.tmpl` (the
//! committed `prometheus.yml` and `alerts.yml` are the renderings for the fixed ports), and the
//! consoles are built into the launcher and written next to them, so the binary runs anywhere.
//! Prometheus runs under the system's supervisor as process [`PROCESS`] and keeps its data in
//! `<base dir>/prometheus/data`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::haproxy::render_template;
use crate::ports;
use crate::postgres::run;
use crate::supervisor::CommandSpec;
use crate::system::System;
use crate::topology::{local_url, PatroniPorts, Ports, PROMETHEUS_PORT};

/// Where Debian installs Prometheus; `$WDM_PROMETHEUS` overrides it.
pub const BINARY: &str = "/usr/bin/prometheus";
/// Overrides [`BINARY`].
pub const BINARY_VAR: &str = "WDM_PROMETHEUS";
/// Prometheus's configuration checker, from the same package.
pub const PROMTOOL: &str = "/usr/bin/promtool";
/// The supervised process name.
pub const PROCESS: &str = "prometheus";
/// The console every dashboard link starts from.
pub const CONSOLE: &str = "checkout.html";

/// The scrape configuration's template.
pub const CONFIG_TEMPLATE: &str = include_str!("../../prometheus/prometheus.yml.tmpl");
/// The alert rules' template.
pub const ALERTS_TEMPLATE: &str = include_str!("../../prometheus/alerts.yml.tmpl");
/// Console templates, by file name.
pub const CONSOLES: [(&str, &str); 1] = [(
    CONSOLE,
    include_str!("../../prometheus/consoles/checkout.html"),
)];
/// Console libraries, by file name.
pub const CONSOLE_LIBRARIES: [(&str, &str); 1] = [(
    "checkout.lib",
    include_str!("../../prometheus/console_libraries/checkout.lib"),
)];

/// How Prometheus runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringConfig {
    /// Prometheus's own (loopback) port.
    pub port: u16,
    pub scrape_interval: Duration,
    /// Age of a prepared branch that raises `PreparedBranchInDoubt`.
    pub in_doubt_age: Duration,
}

impl MonitoringConfig {
    /// `scripts/up --monitoring`: port 9090, a scrape every 5 s, alert at 60 s in doubt.
    pub fn fixed() -> Self {
        MonitoringConfig {
            port: PROMETHEUS_PORT,
            scrape_interval: Duration::from_secs(5),
            in_doubt_age: Duration::from_secs(60),
        }
    }

    /// Tests: a free port, a scrape every second, alert at 2 s in doubt.
    pub fn for_tests() -> Result<Self> {
        Ok(MonitoringConfig {
            port: ports::free_port()?,
            scrape_interval: Duration::from_secs(1),
            in_doubt_age: Duration::from_secs(2),
        })
    }

    /// Renders [`CONFIG_TEMPLATE`] for `targets`.
    pub fn render_config(&self, targets: &ScrapeTargets) -> Result<String> {
        let list = |ports: &[u16]| {
            let quoted: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut values = BTreeMap::new();
        values.insert("scrape_interval", seconds(self.scrape_interval));
        values.insert("scrape_timeout", seconds(self.scrape_interval));
        values.insert("order_targets", list(&targets.order));
        values.insert("stock_targets", list(&targets.stock));
        values.insert("payment_targets", list(&targets.payment));
        values.insert("coordinator_targets", list(&targets.coordinator));
        values.insert("haproxy_targets", list(&targets.haproxy));
        values.insert("patroni_targets", list(&targets.patroni));
        values.insert("etcd_targets", list(&targets.etcd));
        values.insert("prometheus_targets", list(&[self.port]));
        render_template(CONFIG_TEMPLATE, &values)
    }

    /// Renders [`ALERTS_TEMPLATE`].
    pub fn render_alerts(&self) -> Result<String> {
        let mut values = BTreeMap::new();
        values.insert(
            "in_doubt_age_seconds",
            self.in_doubt_age.as_secs().to_string(),
        );
        render_template(ALERTS_TEMPLATE, &values)
    }

    /// Writes the configuration, rules, consoles and libraries into `dir`.
    pub fn write(&self, dir: &Path, targets: &ScrapeTargets) -> Result<()> {
        let consoles = dir.join("consoles");
        let libraries = dir.join("console_libraries");
        let files = [
            (dir.join("prometheus.yml"), self.render_config(targets)?),
            (dir.join("alerts.yml"), self.render_alerts()?),
        ]
        .into_iter()
        .chain(CONSOLES.map(|(name, text)| (consoles.join(name), text.to_owned())))
        .chain(CONSOLE_LIBRARIES.map(|(name, text)| (libraries.join(name), text.to_owned())));
        for dir in [&consoles, &libraries] {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        for (path, text) in files {
            std::fs::write(&path, text).context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The `/metrics` ports Prometheus scrapes, by job (all on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrapeTargets {
    pub order: Vec<u16>,
    pub stock: Vec<u16>,
    pub payment: Vec<u16>,
    pub coordinator: Vec<u16>,
    pub haproxy: Vec<u16>,
    /// Patroni nodes' REST ports (high-availability mode).
    pub patroni: Vec<u16>,
    /// etcd's client port (high-availability mode).
    pub etcd: Vec<u16>,
}

impl ScrapeTargets {
    /// The services and the gateway of a system on `ports`, without the high-availability jobs.
    pub fn of(ports: &Ports) -> Self {
        ScrapeTargets {
            order: ports.order.clone(),
            stock: ports.stock.clone(),
            payment: ports.payment.clone(),
            coordinator: ports.coordinator.clone(),
            haproxy: ports.haproxy_metrics.clone(),
            patroni: Vec::new(),
            etcd: Vec::new(),
        }
    }

    /// The same targets with the high-availability mode's Patroni nodes and etcd.
    pub fn with_ha(self, patroni: Vec<u16>, etcd: Vec<u16>) -> Self {
        ScrapeTargets {
            patroni,
            etcd,
            ..self
        }
    }

    /// `scripts/up`'s fixed ports, with the high-availability jobs on their fixed ports (down
    /// without `--ha`): what `prometheus/prometheus.yml` is rendered for.
    pub fn fixed(ports: &Ports) -> Self {
        let ha = PatroniPorts::fixed();
        ScrapeTargets::of(ports).with_ha(ha.rest_ports(), vec![ha.etcd_client])
    }
}

/// A running Prometheus of a [`System`]; stopped with the system's supervisor.
#[derive(Debug, Clone)]
pub struct Monitoring {
    url: String,
    dir: PathBuf,
}

impl Monitoring {
    /// Writes the configuration into `<base dir>/prometheus`, checks it with promtool, starts
    /// Prometheus under `system`'s supervisor and returns once it is ready.
    pub async fn start(
        system: &System,
        config: &MonitoringConfig,
        targets: &ScrapeTargets,
    ) -> Result<Monitoring> {
        let binary = binary();
        if !binary.is_file() {
            return Err(Error::MissingBinary {
                name: binary.to_string_lossy().into_owned(),
                dir: binary.parent().map(Path::to_path_buf).unwrap_or_default(),
                hint: "apt-get install -y prometheus (scripts/up --monitoring does it)",
            });
        }
        let dir = std::path::absolute(system.config().base_dir.join("prometheus"))
            .context(|| "resolving the prometheus directory".to_owned())?;
        config.write(&dir, targets)?;
        check_config(&dir.join("prometheus.yml"))?;
        let listen = format!("127.0.0.1:{}", config.port);
        let flag = |name: &str, path: PathBuf| format!("--{name}={}", path.display());
        let spec = CommandSpec::new(binary)
            .arg(flag("config.file", dir.join("prometheus.yml")))
            .arg(flag("storage.tsdb.path", dir.join("data")))
            .arg(flag("web.console.templates", dir.join("consoles")))
            .arg(flag("web.console.libraries", dir.join("console_libraries")))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--storage.tsdb.retention.time=7d")
            .current_dir(&dir);
        system.supervisor().spawn(PROCESS, spec)?;
        let monitoring = Monitoring {
            url: format!("http://{listen}"),
            dir,
        };
        monitoring.wait_ready(Duration::from_secs(60)).await?;
        Ok(monitoring)
    }

    /// Prometheus's base URL (API, web UI).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The checkout console's URL.
    pub fn console_url(&self) -> String {
        format!("{}/consoles/{CONSOLE}", self.url)
    }

    /// Where the rendered configuration, consoles and data are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|error| Error::Config(format!("building an HTTP client: {error}")))?;
        let deadline = Instant::now() + timeout;
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Ok(response) = client.get(&ready).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("Prometheus at {ready}"),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The console's URL on the Prometheus of `scripts/up --monitoring`.
pub fn fixed_console_url() -> String {
    format!("{}/consoles/{CONSOLE}", local_url(PROMETHEUS_PORT))
}

/// The Prometheus program to run.
pub fn binary() -> PathBuf {
    std::env::var_os(BINARY_VAR).map_or_else(|| PathBuf::from(BINARY), PathBuf::from)
}

/// `promtool check config` (which also checks the rule files it names).
pub fn check_config(path: &Path) -> Result<String> {
    let mut command = Command::new(PROMTOOL);
    command.arg("check").arg("config").arg(path);
    run(command)
}

/// `promtool check rules`.
pub fn check_rules(path: &Path) -> Result<String> {
    let mut command = Command::new(PROMTOOL);
    command.arg("check").arg("rules").arg(path);
    run(command)
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Instances;

    const STATIC_CONFIG: &str = include_str!("../../prometheus/prometheus.yml");
    const STATIC_ALERTS: &str = include_str!("../../prometheus/alerts.yml");

    /// After changing a template, `WDM_BLESS=1 cargo test -p launcher committed_prometheus`
    /// writes the new renderings.
    #[test]
    fn the_committed_prometheus_files_are_the_renderings_for_the_fixed_ports() {
        let config = MonitoringConfig::fixed();
        let targets = ScrapeTargets::fixed(&Ports::fixed(Instances::default()));
        let rendered = config.render_config(&targets).unwrap();
        let alerts = config.render_alerts().unwrap();
        if std::env::var_os("WDM_BLESS").is_some() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus");
            std::fs::write(dir.join("prometheus.yml"), &rendered).unwrap();
            std::fs::write(dir.join("alerts.yml"), &alerts).unwrap();
            return;
        }
        assert_eq!(rendered, STATIC_CONFIG, "render again with WDM_BLESS=1");
        assert_eq!(alerts, STATIC_ALERTS, "render again with WDM_BLESS=1");
    }

    #[test]
    fn promtool_accepts_the_rendered_config_and_rules() {
        let dir = crate::ScratchDir::new("prometheus").unwrap();
        for config in [
            MonitoringConfig::fixed(),
            MonitoringConfig::for_tests().unwrap(),
        ] {
            let targets = ScrapeTargets::fixed(&Ports::fixed(Instances::default()));
            config.write(dir.path(), &targets).unwrap();
            check_config(&dir.path().join("prometheus.yml")).unwrap();
            check_rules(&dir.path().join("alerts.yml")).unwrap();
        }
    }

    #[test]
    fn the_fixed_config_scrapes_every_instance_of_scripts_up() {
        let targets = ScrapeTargets::fixed(&Ports::fixed(Instances::default()));
        let jobs = [
            &targets.order,
            &targets.stock,
            &targets.payment,
            &targets.coordinator,
            &targets.haproxy,
            &targets.patroni,
            &targets.etcd,
        ];
        assert_eq!(targets.coordinator.len(), 2, "both coordinators");
        assert_eq!(targets.haproxy.len(), 2, "both gateway processes");
        for port in jobs.into_iter().flatten() {
            assert!(
                STATIC_CONFIG.contains(&format!("'127.0.0.1:{port}'")),
                "{port}"
            );
        }
    }
}
