//! The whole checkout system on this machine: four PostgreSQL instances, two instances of
//! each service, two coordinators and two HAProxy gateway processes, all supervised (the
//! processes and ports are in [`crate::topology`]).
//!
//! `scripts/up` starts it on fixed ports ([`SystemConfig::fixed`]); system tests and
//! benchmarks start private copies on free ports ([`System::start_temporary`]) and inject
//! faults with the methods of [`crate::faults`].
//!
//! With [`Databases::Patroni`] (`scripts/up --ha`, [`System::start_temporary_ha`]) each
//! database is instead a Patroni cluster of two nodes (primary and synchronous standby) with
//! etcd, and a second HAProxy (`haproxy-databases`) listens on the database ports and routes
//! to each cluster's primary, so the services' database URLs are the same in both modes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::etcd::Etcd;
use crate::haproxy::{self, DatabaseNode, DatabaseRouterConfig, GatewayConfig};
use crate::patroni::{self, Member, PatroniNode};
use crate::postgres::{self, PostgresInstance};
use crate::scratch::ScratchDir;
use crate::supervisor::{CommandSpec, Supervisor};
pub use crate::topology::{
    coordinator_id, gateway_process, Databases, Instances, PatroniPorts, Ports, Service, ETCD,
    HAPROXY_DATABASES, NODES_PER_DATABASE,
};

/// Overrides where the service binaries are looked up (tests: `target/debug`).
pub const BIN_DIR_VAR: &str = "WDM_BIN_DIR";
/// Probes that answer through the gateway once each prefix has a live backend: an unknown id
/// is a 4xx from the service, while HAProxy itself answers 503 when no server is up.
const GATEWAY_PROBES: [&str; 3] = [
    "/orders/find/launcher-probe",
    "/stock/find/launcher-probe",
    "/payment/find_user/launcher-probe",
];

/// What [`System::start`] needs.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Data, logs and rendered configuration go here (`.data/` for `scripts/up`).
    pub base_dir: PathBuf,
    /// Where `wdm-order`, `wdm-stock`, `wdm-payment` and `wdm-coordinator` are.
    pub bin_dir: PathBuf,
    pub ports: Ports,
    /// How long start-up may take before it is declared failed.
    pub ready_timeout: Duration,
    /// One server per database, or Patroni clusters.
    pub databases: Databases,
}

impl SystemConfig {
    /// The `scripts/up` system: fixed ports, two instances of each service.
    pub fn fixed(base_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        SystemConfig {
            base_dir: base_dir.into(),
            bin_dir: bin_dir.into(),
            ports: Ports::fixed(Instances::default()),
            ready_timeout: Duration::from_secs(90),
            databases: Databases::Single,
        }
    }

    /// The same system with `databases`.
    pub fn with_databases(self, databases: Databases) -> Self {
        SystemConfig { databases, ..self }
    }

    /// A private system on free ports.
    pub fn with_free_ports(
        base_dir: impl Into<PathBuf>,
        bin_dir: impl Into<PathBuf>,
        instances: Instances,
    ) -> Result<Self> {
        Ok(SystemConfig {
            ports: Ports::free(instances)?,
            ..SystemConfig::fixed(base_dir, bin_dir)
        })
    }

    /// Where tests find the service binaries: `$WDM_BIN_DIR`, else the cargo profile
    /// directory the running test binary was built in (`target/debug/deps/..` -> `target/debug`).
    pub fn default_bin_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(BIN_DIR_VAR) {
            return PathBuf::from(dir);
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        dir
    }

    fn logs_dir(&self) -> PathBuf {
        self.base_dir.join("logs")
    }
}

/// The running system. Dropping it stops every process (and removes a temporary base dir).
pub struct System {
    config: SystemConfig,
    supervisor: Supervisor,
    postgres: BTreeMap<Service, PostgresInstance>,
    /// The high-availability mode's etcd and nodes (empty otherwise).
    etcd: Option<Etcd>,
    pub(crate) patroni: BTreeMap<Service, Vec<PatroniNode>>,
    /// Direct URL of every service instance, by process name.
    instance_urls: BTreeMap<String, String>,
    /// Declared after the supervisor: kills the postmasters a stopped Patroni left behind.
    _postmasters: LeftoverPostmasters,
    /// Declared after the supervisor: removed only once every process is gone.
    _scratch: Option<ScratchDir>,
}

/// Patroni starts each postmaster in a session of its own, out of the supervisor's reach: a
/// Patroni that was killed, or did not stop within the grace period, leaves it running.
struct LeftoverPostmasters(Vec<PatroniNode>);

impl Drop for LeftoverPostmasters {
    fn drop(&mut self) {
        patroni::kill_leftover_postmasters(&self.0);
    }
}

impl System {
    /// Starts everything and returns once the gateway answers on every prefix.
    pub async fn start(config: SystemConfig) -> Result<System> {
        let system = System::prepare(config, None)?;
        system.bring_up().await?;
        Ok(system)
    }

    /// A private system in a temporary directory, on free ports, with the binaries of
    /// [`SystemConfig::default_bin_dir`]: what system tests and benchmarks use.
    pub async fn start_temporary(instances: Instances) -> Result<System> {
        System::start_temporary_with(instances, Databases::Single).await
    }

    /// [`System::start_temporary`] with Patroni clusters as databases.
    pub async fn start_temporary_ha(instances: Instances) -> Result<System> {
        System::start_temporary_with(instances, Databases::Patroni(PatroniPorts::free()?)).await
    }

    async fn start_temporary_with(instances: Instances, databases: Databases) -> Result<System> {
        let scratch = ScratchDir::new("system")?;
        let config = SystemConfig::with_free_ports(
            scratch.path(),
            SystemConfig::default_bin_dir(),
            instances,
        )?
        .with_databases(databases);
        let system = System::prepare(config, Some(scratch))?;
        system.bring_up().await?;
        Ok(system)
    }

    fn prepare(config: SystemConfig, scratch: Option<ScratchDir>) -> Result<System> {
        for service in Service::ALL {
            let binary = config.bin_dir.join(service.binary());
            if !binary.is_file() {
                return Err(Error::MissingBinary {
                    name: service.binary().to_owned(),
                    dir: config.bin_dir.clone(),
                    hint: if config.bin_dir.ends_with("release") {
                        "cargo build --release"
                    } else {
                        "cargo build --workspace --bins"
                    },
                });
            }
        }
        if haproxy::find_binary().is_none() {
            return Err(Error::MissingBinary {
                name: haproxy::BINARY.to_owned(),
                dir: PathBuf::from("PATH"),
                hint: "apt-get install -y haproxy (scripts/up does it)",
            });
        }
        let supervisor = Supervisor::new(config.logs_dir())?;
        let mut postgres = BTreeMap::new();
        let mut patroni = BTreeMap::new();
        let mut etcd = None;
        match &config.databases {
            Databases::Single => {
                for service in Service::ALL {
                    let dir = config.base_dir.join("pg").join(service.name());
                    let instance = PostgresInstance::new(dir, config.ports.postgres(service))?;
                    postgres.insert(service, instance);
                }
            }
            Databases::Patroni(ports) => {
                for (binary, hint) in [
                    (
                        PatroniNode::binary(),
                        "apt-get install -y patroni (scripts/up does it)",
                    ),
                    (
                        Etcd::binary(),
                        "apt-get install -y etcd-server (scripts/up does it)",
                    ),
                ] {
                    if !binary.is_file() {
                        return Err(Error::MissingBinary {
                            name: binary.to_string_lossy().into_owned(),
                            dir: binary.parent().map(Path::to_path_buf).unwrap_or_default(),
                            hint,
                        });
                    }
                }
                etcd = Some(Etcd {
                    dir: config.base_dir.join("etcd"),
                    client: loopback(ports.etcd_client),
                    peer: loopback(ports.etcd_peer),
                });
                for service in Service::ALL {
                    let nodes = ports
                        .nodes(service)
                        .iter()
                        .enumerate()
                        .map(|(index, node_ports)| {
                            let name = service.patroni_node(index + 1);
                            let dir = config.base_dir.join("patroni").join(&name);
                            PatroniNode::new(service.name(), &name, dir, *node_ports)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    patroni.insert(service, nodes);
                }
            }
        }
        let all_nodes = patroni.values().flatten().cloned().collect();
        let mut instance_urls = BTreeMap::new();
        for service in Service::ALL {
            for (name, port) in config.ports.processes(service) {
                instance_urls.insert(name, local_url(port));
            }
        }
        Ok(System {
            config,
            supervisor,
            postgres,
            etcd,
            patroni,
            instance_urls,
            _postmasters: LeftoverPostmasters(all_nodes),
            _scratch: scratch,
        })
    }

    async fn bring_up(&self) -> Result<()> {
        let deadline = Instant::now() + self.config.ready_timeout;
        match self.config.databases {
            Databases::Single => self.start_databases(deadline).await?,
            Databases::Patroni(_) => self.start_patroni(deadline).await?,
        }
        self.start_services()?;
        self.start_gateway()?;
        self.wait_ready(deadline).await
    }

    async fn start_databases(&self, deadline: Instant) -> Result<()> {
        // initdb takes seconds; the four run in parallel.
        let mut inits = tokio::task::JoinSet::new();
        for instance in self.postgres.values() {
            let instance = instance.clone();
            inits.spawn_blocking(move || instance.init());
        }
        while let Some(result) = inits.join_next().await {
            result.map_err(|error| Error::Config(format!("initdb task failed: {error}")))??;
        }
        for (service, instance) in &self.postgres {
            self.supervisor
                .spawn(&service.postgres_process(), instance.command_spec())?;
        }
        for (service, instance) in &self.postgres {
            instance
                .wait_ready(deadline.saturating_duration_since(Instant::now()))
                .await?;
            instance.create_database(service.name()).await?;
        }
        Ok(())
    }

    /// etcd, every Patroni node, the database router; returns once every database has a
    /// primary with a standby following it, and exists.
    async fn start_patroni(&self, deadline: Instant) -> Result<()> {
        let etcd = self
            .etcd
            .as_ref()
            .ok_or_else(|| Error::Config("no etcd in the high-availability mode".into()))?;
        std::fs::create_dir_all(&etcd.dir)
            .context(|| format!("creating {}", etcd.dir.display()))?;
        self.supervisor.spawn(ETCD, etcd.command_spec())?;
        etcd.wait_ready(deadline).await?;
        for node in self.patroni.values().flatten() {
            node.configure(etcd.client)?;
            self.supervisor.spawn(node.name(), node.command_spec())?;
        }
        self.start_database_router()?;
        for (service, nodes) in &self.patroni {
            let left = deadline.saturating_duration_since(Instant::now());
            patroni::wait_cluster(nodes, NODES_PER_DATABASE - 1, left).await?;
            let admin = self.admin_url(*service);
            let left = deadline.saturating_duration_since(Instant::now());
            postgres::wait_accepting(&admin, left).await?;
            postgres::create_database(&admin, service.name()).await?;
        }
        Ok(())
    }

    fn start_database_router(&self) -> Result<()> {
        let databases = self
            .patroni
            .iter()
            .map(|(service, nodes)| {
                let servers = nodes
                    .iter()
                    .map(|node| DatabaseNode {
                        name: node.name().to_owned(),
                        postgres: loopback(node.ports().postgres),
                        rest_port: node.ports().rest,
                    })
                    .collect();
                (
                    service.name().to_owned(),
                    loopback(self.config.ports.postgres(*service)),
                    servers,
                )
            })
            .collect();
        let dir = self.config.base_dir.join("haproxy");
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("databases.cfg");
        DatabaseRouterConfig { databases }.write(&path)?;
        haproxy::validate(&path)?;
        self.supervisor
            .spawn(HAPROXY_DATABASES, haproxy::command_spec(&path))?;
        Ok(())
    }

    fn start_services(&self) -> Result<()> {
        let ports = &self.config.ports;
        for service in [Service::Stock, Service::Payment, Service::Order] {
            for (name, port) in ports.processes(service) {
                let mut spec = self
                    .service_command(service, port)
                    .arg("--database-url")
                    .arg(self.database_url(service));
                if service == Service::Order {
                    spec = spec.arg("--stock-url").arg(self.frontend(Service::Stock)?);
                    // Every coordinator, each by its own port: the order service picks a live
                    // one, and asks any of them about a transaction.
                    for (_, coordinator) in ports.processes(Service::Coordinator) {
                        spec = spec.arg("--coordinator-url").arg(local_url(coordinator));
                    }
                }
                self.supervisor.spawn(&name, spec)?;
            }
        }
        for (index, (name, port)) in ports
            .processes(Service::Coordinator)
            .into_iter()
            .enumerate()
        {
            // Same participants, same decision log; only the identity differs.
            let mut coordinator = self
                .service_command(Service::Coordinator, port)
                .arg("--database-url")
                .arg(self.database_url(Service::Coordinator))
                .arg("--id")
                .arg(coordinator_id(index + 1));
            for participant in Service::PARTICIPANTS {
                coordinator = coordinator.arg("--participant").arg(format!(
                    "{},{},{}",
                    participant.name(),
                    self.frontend(participant)?,
                    self.database_url(participant)
                ));
            }
            self.supervisor.spawn(&name, coordinator)?;
        }
        Ok(())
    }

    fn service_command(&self, service: Service, port: u16) -> CommandSpec {
        CommandSpec::new(self.config.bin_dir.join(service.binary()))
            .arg("--listen")
            .arg(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).to_string())
    }

    /// One HAProxy process per [`Ports::gateways`], each rendered with its own exporter port
    /// and otherwise the same frontends: they share those ports through SO_REUSEPORT (HAProxy
    /// sets it on every listener unless told `noreuseport`), so the kernel spreads new
    /// connections over the live processes, and a killed one loses only the connections it
    /// held ([`haproxy::migrate_queued_connections`]).
    fn start_gateway(&self) -> Result<()> {
        let ports = &self.config.ports;
        let addresses = |ports: &[u16]| ports.iter().map(|port| loopback(*port)).collect();
        let dir = self.config.base_dir.join("haproxy");
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        haproxy::migrate_queued_connections();
        for (name, metrics) in ports.gateways() {
            let gateway = GatewayConfig {
                gateway: loopback(ports.gateway),
                stock_internal: loopback(ports.stock_internal),
                payment_internal: loopback(ports.payment_internal),
                order_internal: loopback(ports.order_internal),
                metrics: loopback(metrics),
                order: addresses(&ports.order),
                stock: addresses(&ports.stock),
                payment: addresses(&ports.payment),
            };
            let path = dir.join(format!("{name}.cfg"));
            gateway.write(&path)?;
            haproxy::validate(&path)?;
            self.supervisor.spawn(&name, haproxy::command_spec(&path))?;
        }
        Ok(())
    }

    /// Waits until every instance reports healthy, every internal frontend forwards, and the
    /// gateway answers on every prefix.
    async fn wait_ready(&self, deadline: Instant) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|error| Error::Config(format!("building an HTTP client: {error}")))?;
        let mut checks: Vec<(String, bool)> = Vec::new();
        for url in self.instance_urls.values() {
            checks.push((format!("{url}/health"), true));
        }
        for service in [Service::Stock, Service::Payment, Service::Order] {
            checks.push((format!("{}/health", self.frontend(service)?), true));
        }
        // The shared ports answer once any gateway process listens: each one's own exporter
        // proves that every process is up.
        for (_, metrics) in self.config.ports.gateways() {
            checks.push((format!("{}/metrics", local_url(metrics)), true));
        }
        for probe in GATEWAY_PROBES {
            checks.push((format!("{}{probe}", self.gateway_url()), false));
        }
        let mut views = Vec::new();
        for (_, metrics) in self.config.ports.gateways() {
            views.push(format!("{}/metrics", local_url(metrics)));
        }
        for (url, must_be_ok) in checks {
            loop {
                let answered = match client.get(&url).send().await {
                    Ok(response) if must_be_ok => response.status().is_success(),
                    // A service's own answer, whatever it is, proves the route works; 502-504
                    // come from HAProxy when no backend is up.
                    Ok(response) => !matches!(response.status().as_u16(), 502..=504),
                    Err(_) => false,
                };
                if answered {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!(
                            "{url} to answer (logs in {})",
                            self.supervisor.logs_dir().display()
                        ),
                        seconds: self.config.ready_timeout.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A request on the shared gateway port lands on either process, and each one marks
        // its servers up on its own health checks: wait until every process sees a live
        // server in every backend.
        for url in views {
            loop {
                let text = match client.get(&url).send().await {
                    Ok(response) if response.status().is_success() => {
                        response.text().await.unwrap_or_default()
                    }
                    _ => String::new(),
                };
                if every_backend_has_a_server(&text) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("every backend of {url} to have a live server"),
                        seconds: self.config.ready_timeout.as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The public gateway, e.g. `http://127.0.0.1:8000`.
    pub fn gateway_url(&self) -> String {
        local_url(self.config.ports.gateway)
    }

    /// The internal frontend of a service behind the gateway (order, stock, payment); the
    /// coordinators have none (see [`System::instance_url`]).
    pub fn internal_url(&self, service: Service) -> Option<String> {
        self.config.ports.internal(service).map(local_url)
    }

    /// [`System::internal_url`] where one must exist.
    fn frontend(&self, service: Service) -> Result<String> {
        self.internal_url(service)
            .ok_or_else(|| Error::Config(format!("{} has no internal frontend", service.name())))
    }

    /// The direct URL of one service instance by process name (`order-1`, `coordinator-2`).
    pub fn instance_url(&self, name: &str) -> Option<&str> {
        self.instance_urls.get(name).map(String::as_str)
    }

    /// The process names of `service`'s instances (`coordinator-1`, `coordinator-2`, ...).
    pub fn processes(&self, service: Service) -> Vec<String> {
        let processes = self.config.ports.processes(service);
        processes.into_iter().map(|(name, _)| name).collect()
    }

    /// The process names of the gateway (`gateway-1`, `gateway-2`).
    pub fn gateways(&self) -> Vec<String> {
        let gateways = self.config.ports.gateways();
        gateways.into_iter().map(|(name, _)| name).collect()
    }

    /// The URL of `service`'s database, as the superuser.
    pub fn database_url(&self, service: Service) -> String {
        self.config.ports.database_url(service)
    }

    /// The URL of the `postgres` database on `service`'s server (in the high-availability
    /// mode: on its current primary, through the database router).
    pub fn admin_url(&self, service: Service) -> String {
        self.config.ports.admin_url(service)
    }

    /// The PostgreSQL instance of `service` (single-instance mode).
    pub fn postgres(&self, service: Service) -> Option<&PostgresInstance> {
        self.postgres.get(&service)
    }

    /// The Patroni nodes of `service`'s database (high-availability mode; empty otherwise).
    pub fn patroni_nodes(&self, service: Service) -> &[PatroniNode] {
        self.patroni.get(&service).map_or(&[], Vec::as_slice)
    }

    /// The members of `service`'s cluster as Patroni's `GET /cluster` shows them.
    pub async fn members(&self, service: Service) -> Result<Vec<Member>> {
        patroni::members(self.ha_nodes(service)?).await
    }

    /// The node that is `service`'s running primary now, if any.
    pub async fn primary(&self, service: Service) -> Result<Option<String>> {
        patroni::leader(self.ha_nodes(service)?).await
    }

    /// Waits until `service`'s database has a running primary; returns its node name.
    pub async fn wait_primary(&self, service: Service, timeout: Duration) -> Result<String> {
        patroni::wait_cluster(self.ha_nodes(service)?, 0, timeout).await
    }

    /// Waits until `service`'s database has a primary and every other node follows it as a
    /// standby (a killed node has rejoined); returns the primary's name.
    pub async fn wait_replicated(&self, service: Service, timeout: Duration) -> Result<String> {
        patroni::wait_cluster(self.ha_nodes(service)?, NODES_PER_DATABASE - 1, timeout).await
    }

    pub(crate) fn ha_nodes(&self, service: Service) -> Result<&[PatroniNode]> {
        match self.patroni.get(&service) {
            Some(nodes) => Ok(nodes),
            None => Err(Error::Config(
                "the system runs without Patroni (Databases::Single)".into(),
            )),
        }
    }

    /// Every supervised process name (`haproxy`, `order-1`, `pg-stock`, ...).
    pub fn service_names(&self) -> Vec<String> {
        self.supervisor.names()
    }

    /// The supervisor, for finer control (pids, restart counts, pausing restarts).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SystemConfig {
        &self.config
    }

    /// Stops every process (also done by `Drop`).
    pub fn shutdown(&self) {
        self.supervisor.shutdown();
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// True if HAProxy's Prometheus exposition `text` lists backends and each has at least one
/// active server (`haproxy_backend_active_servers{proxy="…"} N`, N ≥ 1).
fn every_backend_has_a_server(text: &str) -> bool {
    let mut counts = text
        .lines()
        .filter(|line| line.starts_with("haproxy_backend_active_servers{"))
        .map(|line| {
            line.rsplit(' ')
                .next()
                .and_then(|value| value.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .peekable();
    counts.peek().is_some() && counts.all(|count| count >= 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gateway_is_ready_once_every_backend_has_a_live_server() {
        let up = "# TYPE haproxy_backend_active_servers gauge\n\
                  haproxy_backend_active_servers{proxy=\"order\"} 2\n\
                  haproxy_backend_active_servers{proxy=\"stock\"} 1\n";
        let one_down = "haproxy_backend_active_servers{proxy=\"order\"} 2\n\
                        haproxy_backend_active_servers{proxy=\"stock\"} 0\n";
        assert!(super::every_backend_has_a_server(up));
        assert!(!super::every_backend_has_a_server(one_down));
        assert!(!super::every_backend_has_a_server("# no backends yet\n"));
    }
}
