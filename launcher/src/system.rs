//! The whole checkout system on this machine: four PostgreSQL instances, two instances of
//! each service, one coordinator and the HAProxy gateway, all supervised.
//!
//! `scripts/up` starts it on fixed ports ([`SystemConfig::fixed`]); system tests and
//! benchmarks start private copies on free ports ([`System::start_temporary`]) and use
//! [`System::kill`], [`System::stop`] and [`System::start`] to inject faults.
//!
//! With [`Databases::Patroni`] (`scripts/up --ha`, [`System::start_temporary_ha`]) each
//! database is instead a Patroni cluster of two nodes (primary and synchronous standby) with
//! etcd, and a second HAProxy (`haproxy-databases`) listens on the database ports and routes
//! to each cluster's primary, so the services' database URLs are the same in both modes.
//! [`System::kill_primary`] loses a primary node, [`System::failover`] measures how long
//! writes are unavailable.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::error::{Error, IoContext, Result};
use crate::etcd::Etcd;
use crate::haproxy::{self, DatabaseNode, DatabaseRouterConfig, GatewayConfig};
use crate::patroni::{self, Member, NodePorts, PatroniNode};
use crate::ports;
use crate::postgres::{self, PostgresInstance};
use crate::scratch::ScratchDir;
use crate::supervisor::{CommandSpec, Supervisor};

/// Overrides where the service binaries are looked up (tests: `target/debug`).
pub const BIN_DIR_VAR: &str = "WDM_BIN_DIR";
/// The process name of the gateway.
pub const HAPROXY: &str = "haproxy";
/// The process name of the database router (high-availability mode).
pub const HAPROXY_DATABASES: &str = "haproxy-databases";
/// The process name of etcd (high-availability mode).
pub const ETCD: &str = "etcd";
/// Patroni nodes per database: a primary and its synchronous standby.
pub const NODES_PER_DATABASE: usize = 2;
/// The coordinator's id in its decision log.
pub const COORDINATOR_ID: &str = "c1";
/// Probes that answer through the gateway once each prefix has a live backend: an unknown id
/// is a 4xx from the service, while HAProxy itself answers 503 when no server is up.
const GATEWAY_PROBES: [&str; 3] = [
    "/orders/find/launcher-probe",
    "/stock/find/launcher-probe",
    "/payment/find_user/launcher-probe",
];

/// The four services; each also names its database and its PostgreSQL instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Order,
    Stock,
    Payment,
    Coordinator,
}

impl Service {
    /// All services, in start-up order of their databases.
    pub const ALL: [Service; 4] = [
        Service::Order,
        Service::Stock,
        Service::Payment,
        Service::Coordinator,
    ];

    /// `order`, `stock`, `payment`, `coordinator`: also the database name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Order => "order",
            Service::Stock => "stock",
            Service::Payment => "payment",
            Service::Coordinator => "coordinator",
        }
    }

    /// The executable's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Service::Order => "wdm-order",
            Service::Stock => "wdm-stock",
            Service::Payment => "wdm-payment",
            Service::Coordinator => "wdm-coordinator",
        }
    }

    /// The supervised name of this service's PostgreSQL instance (`pg-order`, ...).
    pub fn postgres_process(self) -> String {
        format!("pg-{}", self.name())
    }

    /// The supervised (and Patroni) name of node `index` (from 1) of this service's database
    /// in the high-availability mode (`pg-order-1`, ...).
    pub fn patroni_node(self, index: usize) -> String {
        format!("pg-{}-{index}", self.name())
    }

    /// The supervised name of instance `index` (from 1) of this service (`order-1`, ...).
    pub fn instance_process(self, index: usize) -> String {
        match self {
            Service::Coordinator => "coordinator".to_owned(),
            _ => format!("{}-{index}", self.name()),
        }
    }
}

/// How many instances of each balanced service run (one coordinator, always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    pub order: usize,
    pub stock: usize,
    pub payment: usize,
}

impl Default for Instances {
    fn default() -> Self {
        Instances {
            order: 2,
            stock: 2,
            payment: 2,
        }
    }
}

/// Every port the system listens on (all on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub stock_internal: u16,
    pub payment_internal: u16,
    pub order_internal: u16,
    /// The gateway's Prometheus exporter (`/metrics`, loopback only).
    pub haproxy_metrics: u16,
    /// One per instance.
    pub order: Vec<u16>,
    pub stock: Vec<u16>,
    pub payment: Vec<u16>,
    pub coordinator: u16,
    /// PostgreSQL instances, in [`Service::ALL`] order.
    pub postgres: [u16; 4],
}

impl Ports {
    /// The ports `scripts/up` uses (documented in the README).
    pub fn fixed(instances: Instances) -> Self {
        let range = |base: u16, n: usize| (1..).map(|i| base + i).take(n).collect();
        Ports {
            gateway: 8000,
            stock_internal: 8010,
            payment_internal: 8011,
            order_internal: 8012,
            haproxy_metrics: 8009,
            order: range(8100, instances.order),
            stock: range(8200, instances.stock),
            payment: range(8300, instances.payment),
            coordinator: 8401,
            postgres: [5501, 5502, 5503, 5504],
        }
    }

    /// Ports nobody uses now, for a private copy of the system.
    pub fn free(instances: Instances) -> Result<Self> {
        let next = ports::free_port;
        Ok(Ports {
            gateway: next()?,
            stock_internal: next()?,
            payment_internal: next()?,
            order_internal: next()?,
            haproxy_metrics: next()?,
            order: ports::free_ports(instances.order)?,
            stock: ports::free_ports(instances.stock)?,
            payment: ports::free_ports(instances.payment)?,
            coordinator: next()?,
            postgres: [next()?, next()?, next()?, next()?],
        })
    }

    /// The port of `service`'s PostgreSQL instance.
    pub fn postgres(&self, service: Service) -> u16 {
        match service {
            Service::Order => self.postgres[0],
            Service::Stock => self.postgres[1],
            Service::Payment => self.postgres[2],
            Service::Coordinator => self.postgres[3],
        }
    }

    /// The ports of `service`'s instances.
    pub fn instances(&self, service: Service) -> Vec<u16> {
        match service {
            Service::Order => self.order.clone(),
            Service::Stock => self.stock.clone(),
            Service::Payment => self.payment.clone(),
            Service::Coordinator => vec![self.coordinator],
        }
    }

    /// The port of `service`'s internal frontend (the coordinator has none: its own port).
    pub fn internal(&self, service: Service) -> u16 {
        match service {
            Service::Order => self.order_internal,
            Service::Stock => self.stock_internal,
            Service::Payment => self.payment_internal,
            Service::Coordinator => self.coordinator,
        }
    }
}

/// Where the four databases run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Databases {
    /// One PostgreSQL server per database on [`Ports::postgres`] (the default).
    #[default]
    Single,
    /// A Patroni cluster per database (primary and synchronous standby) with etcd; HAProxy
    /// listens on [`Ports::postgres`] and routes to each cluster's current primary.
    Patroni(PatroniPorts),
}

/// The extra ports of the high-availability mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniPorts {
    pub etcd_client: u16,
    pub etcd_peer: u16,
    /// The nodes of each database, in [`Service::ALL`] order.
    pub nodes: [[NodePorts; NODES_PER_DATABASE]; 4],
}

impl PatroniPorts {
    /// The ports `scripts/up --ha` uses: etcd on 2379/2380, node `n` of the `i`-th database
    /// (order, stock, payment, coordinator from 1) on PostgreSQL port `5600 + 10 i + n` and
    /// REST port `8600 + 10 i + n`.
    pub fn fixed() -> Self {
        let node = |i: u16, n: u16| NodePorts {
            postgres: 5600 + 10 * i + n,
            rest: 8600 + 10 * i + n,
        };
        PatroniPorts {
            etcd_client: 2379,
            etcd_peer: 2380,
            nodes: [1, 2, 3, 4].map(|i| [node(i, 1), node(i, 2)]),
        }
    }

    /// Free ports, for a private system.
    pub fn free() -> Result<Self> {
        let next = ports::free_port;
        let node = || -> Result<NodePorts> {
            Ok(NodePorts {
                postgres: next()?,
                rest: next()?,
            })
        };
        let mut nodes = Vec::with_capacity(4);
        for _ in Service::ALL {
            nodes.push([node()?, node()?]);
        }
        Ok(PatroniPorts {
            etcd_client: next()?,
            etcd_peer: next()?,
            nodes: nodes
                .try_into()
                .map_err(|_| Error::Config("four databases".into()))?,
        })
    }

    /// The nodes of `service`'s database.
    pub fn nodes(&self, service: Service) -> [NodePorts; NODES_PER_DATABASE] {
        let index = Service::ALL
            .iter()
            .position(|s| *s == service)
            .unwrap_or_default();
        self.nodes[index]
    }
}

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
    patroni: BTreeMap<Service, Vec<PatroniNode>>,
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

/// What [`System::failover`] measured.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The node that was primary and was killed.
    pub killed: String,
    /// The node that took over.
    pub new_primary: String,
    /// From the SIGKILL to the first write through the database's HAProxy frontend that
    /// succeeded.
    pub write_unavailable: Duration,
    /// From the SIGKILL until the killed node, started again once the new primary wrote,
    /// followed it as a standby.
    pub rejoined_after: Duration,
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
            for (index, port) in config.ports.instances(service).into_iter().enumerate() {
                instance_urls.insert(service.instance_process(index + 1), local_url(port));
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
        for service in [Service::Stock, Service::Payment, Service::Order] {
            for (index, port) in self.config.ports.instances(service).into_iter().enumerate() {
                let mut spec = self
                    .service_command(service, port)
                    .arg("--database-url")
                    .arg(self.database_url(service));
                if service == Service::Order {
                    spec = spec
                        .arg("--stock-url")
                        .arg(self.internal_url(Service::Stock))
                        .arg("--coordinator-url")
                        .arg(self.internal_url(Service::Coordinator));
                }
                self.supervisor
                    .spawn(&service.instance_process(index + 1), spec)?;
            }
        }
        let mut coordinator = self
            .service_command(Service::Coordinator, self.config.ports.coordinator)
            .arg("--database-url")
            .arg(self.database_url(Service::Coordinator))
            .arg("--id")
            .arg(COORDINATOR_ID);
        for participant in [Service::Order, Service::Payment, Service::Stock] {
            coordinator = coordinator.arg("--participant").arg(format!(
                "{},{},{}",
                participant.name(),
                self.internal_url(participant),
                self.database_url(participant)
            ));
        }
        self.supervisor
            .spawn(&Service::Coordinator.instance_process(1), coordinator)?;
        Ok(())
    }

    fn service_command(&self, service: Service, port: u16) -> CommandSpec {
        CommandSpec::new(self.config.bin_dir.join(service.binary()))
            .arg("--listen")
            .arg(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).to_string())
    }

    fn start_gateway(&self) -> Result<()> {
        let ports = &self.config.ports;
        let addresses = |ports: &[u16]| ports.iter().map(|port| loopback(*port)).collect();
        let gateway = GatewayConfig {
            gateway: loopback(ports.gateway),
            stock_internal: loopback(ports.stock_internal),
            payment_internal: loopback(ports.payment_internal),
            order_internal: loopback(ports.order_internal),
            metrics: loopback(ports.haproxy_metrics),
            order: addresses(&ports.order),
            stock: addresses(&ports.stock),
            payment: addresses(&ports.payment),
        };
        let dir = self.config.base_dir.join("haproxy");
        std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("gateway.cfg");
        gateway.write(&path)?;
        haproxy::validate(&path)?;
        self.supervisor
            .spawn(HAPROXY, haproxy::command_spec(&path))?;
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
            checks.push((format!("{}/health", self.internal_url(service)), true));
        }
        for probe in GATEWAY_PROBES {
            checks.push((format!("{}{probe}", self.gateway_url()), false));
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
        Ok(())
    }

    /// The public gateway, e.g. `http://127.0.0.1:8000`.
    pub fn gateway_url(&self) -> String {
        local_url(self.config.ports.gateway)
    }

    /// The internal frontend of `service` (for the coordinator: the coordinator itself).
    pub fn internal_url(&self, service: Service) -> String {
        local_url(self.config.ports.internal(service))
    }

    /// The direct URL of one service instance by process name (`order-1`, `coordinator`).
    pub fn instance_url(&self, name: &str) -> Option<&str> {
        self.instance_urls.get(name).map(String::as_str)
    }

    /// The URL of `service`'s database, as the superuser.
    pub fn database_url(&self, service: Service) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.config.ports.postgres(service),
            service.name()
        )
    }

    /// The URL of the `postgres` database on `service`'s server (in the high-availability
    /// mode: on its current primary, through the database router).
    pub fn admin_url(&self, service: Service) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.config.ports.postgres(service)
        )
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

    /// Loses the primary node of `service`'s database, as a machine loss would: SIGKILL to
    /// its Patroni and to its postmaster (which Patroni runs in a session of its own). The
    /// node stays down until [`System::start_process`] with the returned name.
    pub async fn kill_primary(&self, service: Service) -> Result<String> {
        let name = self.primary(service).await?.ok_or_else(|| {
            Error::Config(format!(
                "database {} has no running primary",
                service.name()
            ))
        })?;
        self.kill_node(&name)?;
        Ok(name)
    }

    /// SIGKILL to Patroni node `name` and its postmaster; it stays down until
    /// [`System::start_process`].
    pub fn kill_node(&self, name: &str) -> Result<()> {
        let node = self
            .patroni
            .values()
            .flatten()
            .find(|node| node.name() == name)
            .ok_or_else(|| Error::UnknownProcess(name.to_owned()))?;
        self.supervisor.pause_restarts(name)?;
        self.supervisor.kill(name)?;
        node.kill_postmaster()?;
        Ok(())
    }

    /// Kills `service`'s primary, measures how long writes through its HAProxy frontend fail,
    /// starts the killed node again once the new primary has written, and waits (at most
    /// `timeout` in all) until it follows as a standby.
    pub async fn failover(&self, service: Service, timeout: Duration) -> Result<Failover> {
        let deadline = Instant::now() + timeout;
        let killed = self.kill_primary(service).await?;
        let started = Instant::now();
        while !self.write_probe(service).await {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("a write to database {} after its failover", service.name()),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let write_unavailable = started.elapsed();
        self.start_process(&killed)?;
        let new_primary = self
            .wait_replicated(service, deadline.saturating_duration_since(Instant::now()))
            .await?;
        Ok(Failover {
            killed,
            new_primary,
            write_unavailable,
            rejoined_after: started.elapsed(),
        })
    }

    /// True if one write transaction (it takes a transaction id, so it commits a WAL record
    /// and waits for the synchronous standby, if any) succeeds on `service`'s database now.
    pub async fn write_probe(&self, service: Service) -> bool {
        let url = self.admin_url(service);
        let attempt = async {
            let mut connection = PgConnection::connect(&url).await?;
            sqlx::query("select txid_current()")
                .execute(&mut connection)
                .await?;
            connection.close().await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Ok(()))
        )
    }

    fn ha_nodes(&self, service: Service) -> Result<&[PatroniNode]> {
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

    /// SIGKILL to a process group; it is restarted (a crash).
    pub fn kill(&self, name: &str) -> Result<Option<u32>> {
        self.supervisor.kill(name)
    }

    /// Stops a process and keeps it down.
    pub fn stop(&self, name: &str) -> Result<()> {
        self.supervisor.stop(name)
    }

    /// Starts a stopped process again.
    pub fn start_process(&self, name: &str) -> Result<()> {
        self.supervisor.start(name)
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
