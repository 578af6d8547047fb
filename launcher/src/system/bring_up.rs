//! Bring-up: the pieces of a system made from its configuration, then started in order
//! (databases, services, gateway) and waited for until [`super::readiness`] says it is up.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::readiness::Probes;
use super::{LeftoverPostmasters, System, SystemConfig};
use crate::error::{Error, IoContext, Result};
use crate::etcd::Etcd;
use crate::haproxy::{self, DatabaseNode, DatabaseRouterConfig, GatewayConfig};
use crate::patroni::{self, PatroniNode};
use crate::postgres::{self, PostgresInstance};
use crate::scratch::ScratchDir;
use crate::supervisor::{CommandSpec, Supervisor};
use crate::topology::{
    coordinator_id, local_url, loopback, Databases, Instances, PatroniPorts, Service, ETCD,
    HAPROXY_DATABASES, NODES_PER_DATABASE,
};

/// The environment variable tokio reads for a runtime's worker threads.
const WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

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
        self.probes()?
            .wait(
                deadline,
                self.config.ready_timeout,
                self.supervisor.logs_dir(),
            )
            .await
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
            // Same participants, same decision log; only the identity differs. Votes are asked
            // of the participants' instances directly, not through the gateway.
            let mut coordinator = self
                .service_command(Service::Coordinator, port)
                .arg("--database-url")
                .arg(self.database_url(Service::Coordinator))
                .arg("--id")
                .arg(coordinator_id(index + 1));
            for participant in Service::PARTICIPANTS {
                let instances: Vec<String> = ports
                    .processes(participant)
                    .into_iter()
                    .map(|(_, port)| local_url(port))
                    .collect();
                coordinator = coordinator.arg("--participant").arg(format!(
                    "{},{},{}",
                    participant.name(),
                    instances.join("|"),
                    self.database_url(participant)
                ));
            }
            self.supervisor.spawn(&name, coordinator)?;
        }
        Ok(())
    }

    /// A service process. Each runs one tokio worker thread unless `TOKIO_WORKER_THREADS` says
    /// otherwise: every process of the system shares this machine's cores, and a second worker
    /// per service only adds wakeups and work stealing between threads (measured with
    /// `scripts/bench`: the services' CPU per checkout about an eighth lower with one).
    fn service_command(&self, service: Service, port: u16) -> CommandSpec {
        let workers = std::env::var_os(WORKER_THREADS).unwrap_or_else(|| "1".into());
        CommandSpec::new(self.config.bin_dir.join(service.binary()))
            .arg("--listen")
            .arg(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).to_string())
            .env(WORKER_THREADS, workers)
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

    /// What [`Probes::wait`] waits for: every instance's health, every internal frontend,
    /// every gateway process's exporter, the gateway's prefixes.
    fn probes(&self) -> Result<Probes> {
        let mut checks: Vec<(String, bool)> = Vec::new();
        for url in self.instance_urls.values() {
            checks.push((format!("{url}/health"), true));
        }
        for service in [Service::Stock, Service::Payment, Service::Order] {
            checks.push((format!("{}/health", self.frontend(service)?), true));
        }
        // The shared ports answer once any gateway process listens: each one's own exporter
        // proves that every process is up.
        let views: Vec<String> = self
            .config
            .ports
            .gateways()
            .into_iter()
            .map(|(_, metrics)| format!("{}/metrics", local_url(metrics)))
            .collect();
        for view in &views {
            checks.push((view.clone(), true));
        }
        Ok(Probes::new(checks, &self.gateway_url(), views))
    }
}
