//! What the checkout system consists of: its services, how many processes of each, their
//! names, and every port. The fixed layout of `scripts/up` ([`Ports::fixed`],
//! [`PatroniPorts::fixed`], [`PROMETHEUS_PORT`], the database URLs) is written here and
//! nowhere else: the launcher, the tests, the benchmark, the monitoring rendering
//! (`prometheus/prometheus.yml`) and `wdm-recovery`'s local fallback all read it; what the
//! containers do differently is in [`compose`], and `launcher/tests/compose_file.rs` holds
//! `docker-compose.yml` and `docker/entrypoint` to this table.
//!
//! Process names, as the supervisor, the logs (`<name>.log`) and the README know them:
//! `gateway-<n>` (HAProxy), `order-<n>`, `stock-<n>`, `payment-<n>`, `coordinator-<n>` (whose
//! decision-log identity is `c<n>`), `pg-<database>` (or `pg-<database>-<n>` with Patroni),
//! `haproxy-databases`, `etcd`; all numbered from 1.

use std::net::{Ipv4Addr, SocketAddr};

use crate::error::{Error, Result};
use crate::ports;

/// The process name of the database router (high-availability mode).
pub const HAPROXY_DATABASES: &str = "haproxy-databases";
/// The process name of etcd (high-availability mode).
pub const ETCD: &str = "etcd";
/// Patroni nodes per database: a primary and its synchronous standby.
pub const NODES_PER_DATABASE: usize = 2;
/// Prometheus's port with `scripts/up --monitoring`, and in `docker-compose.yml`.
pub const PROMETHEUS_PORT: u16 = 9090;
/// The database user every service and tool connects as: the superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";
/// The database on every server that exists before ours are created.
pub const ADMIN_DATABASE: &str = "postgres";

/// The URL of `database` on the PostgreSQL server (or database router frontend) on loopback
/// port `port`, as [`SUPERUSER`].
pub fn database_url(port: u16, database: &str) -> String {
    format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{database}")
}

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

    /// The services behind the gateway, each with an internal frontend.
    pub const BALANCED: [Service; 3] = [Service::Order, Service::Stock, Service::Payment];

    /// The coordinators' participants, in the order they prepare them (the global lock
    /// order: order, payment, stock).
    pub const PARTICIPANTS: [Service; 3] = [Service::Order, Service::Payment, Service::Stock];

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

    /// The supervised name of instance `index` (from 1) of this service (`order-1`,
    /// `coordinator-2`, ...).
    pub fn instance_process(self, index: usize) -> String {
        format!("{}-{index}", self.name())
    }
}

/// The decision-log identity of coordinator `index` (from 1): `c1`, `c2`, ... Stable across
/// restarts, so that a restarted coordinator recovers its own transactions.
pub fn coordinator_id(index: usize) -> String {
    format!("c{index}")
}

/// The supervised name of gateway process `index` (from 1): `gateway-1`, ...
pub fn gateway_process(index: usize) -> String {
    format!("gateway-{index}")
}

/// The address of loopback port `port`: every process of a system on this machine listens on
/// 127.0.0.1.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The HTTP base URL of loopback port `port`, e.g. `http://127.0.0.1:8000`.
pub fn local_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// How many processes of each kind run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    pub order: usize,
    pub stock: usize,
    pub payment: usize,
    /// Coordinators, each with its own identity, sharing the participants and the log.
    pub coordinator: usize,
    /// HAProxy processes sharing the gateway's ports (SO_REUSEPORT).
    pub gateway: usize,
}

impl Default for Instances {
    /// Two of everything: no single process is needed for checkouts to go on.
    fn default() -> Self {
        Instances {
            order: 2,
            stock: 2,
            payment: 2,
            coordinator: 2,
            gateway: 2,
        }
    }
}

/// Every port the system listens on (all on 127.0.0.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// The public frontend, shared by every gateway process.
    pub gateway: u16,
    /// Internal frontends, shared by every gateway process.
    pub stock_internal: u16,
    pub payment_internal: u16,
    pub order_internal: u16,
    /// Each gateway process's own Prometheus exporter (`/metrics`, loopback only).
    pub haproxy_metrics: Vec<u16>,
    /// One per instance.
    pub order: Vec<u16>,
    pub stock: Vec<u16>,
    pub payment: Vec<u16>,
    pub coordinator: Vec<u16>,
    /// PostgreSQL instances, in [`Service::ALL`] order.
    pub postgres: [u16; 4],
}

impl Ports {
    /// The ports `scripts/up` uses: gateway 8000, internal frontends 8010-8012, gateway
    /// process `n`'s exporter `8009 + 10 (n - 1)`, instance `n` of order, stock, payment,
    /// coordinator on `8100 + n`, `8200 + n`, `8300 + n`, `8400 + n`, databases 5501-5504.
    pub fn fixed(instances: Instances) -> Self {
        let range = |base: u16, step: u16, n: usize| {
            (0..).map(|i| base + step * i).take(n).collect::<Vec<u16>>()
        };
        Ports {
            gateway: 8000,
            stock_internal: 8010,
            payment_internal: 8011,
            order_internal: 8012,
            haproxy_metrics: range(8009, 10, instances.gateway),
            order: range(8101, 1, instances.order),
            stock: range(8201, 1, instances.stock),
            payment: range(8301, 1, instances.payment),
            coordinator: range(8401, 1, instances.coordinator),
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
            haproxy_metrics: ports::free_ports(instances.gateway)?,
            order: ports::free_ports(instances.order)?,
            stock: ports::free_ports(instances.stock)?,
            payment: ports::free_ports(instances.payment)?,
            coordinator: ports::free_ports(instances.coordinator)?,
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

    /// The URL of `service`'s database, as [`SUPERUSER`].
    pub fn database_url(&self, service: Service) -> String {
        database_url(self.postgres(service), service.name())
    }

    /// The URL of [`ADMIN_DATABASE`] on `service`'s server.
    pub fn admin_url(&self, service: Service) -> String {
        database_url(self.postgres(service), ADMIN_DATABASE)
    }

    /// The ports of `service`'s instances.
    pub fn instances(&self, service: Service) -> &[u16] {
        match service {
            Service::Order => &self.order,
            Service::Stock => &self.stock,
            Service::Payment => &self.payment,
            Service::Coordinator => &self.coordinator,
        }
    }

    /// `service`'s instances: process name and port.
    pub fn processes(&self, service: Service) -> Vec<(String, u16)> {
        numbered(self.instances(service), |index| {
            service.instance_process(index)
        })
    }

    /// The gateway processes: name and exporter port.
    pub fn gateways(&self) -> Vec<(String, u16)> {
        numbered(&self.haproxy_metrics, gateway_process)
    }

    /// The port of `service`'s internal frontend; the coordinators have none (the order
    /// service calls them directly, each by its own port).
    pub fn internal(&self, service: Service) -> Option<u16> {
        match service {
            Service::Order => Some(self.order_internal),
            Service::Stock => Some(self.stock_internal),
            Service::Payment => Some(self.payment_internal),
            Service::Coordinator => None,
        }
    }
}

fn numbered(ports: &[u16], name: impl Fn(usize) -> String) -> Vec<(String, u16)> {
    ports
        .iter()
        .enumerate()
        .map(|(index, port)| (name(index + 1), *port))
        .collect()
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

/// The two ports of a Patroni node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePorts {
    /// PostgreSQL's TCP port.
    pub postgres: u16,
    /// Patroni's REST API (HAProxy's health check asks it `GET /primary`).
    pub rest: u16,
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

    /// Every node's Patroni REST port (where Prometheus scrapes it), in [`Service::ALL`] order.
    pub fn rest_ports(&self) -> Vec<u16> {
        self.nodes.iter().flatten().map(|node| node.rest).collect()
    }
}

/// The same system in containers (`docker-compose.yml`, `docker/entrypoint`): every process a
/// compose service named like its supervised process, found by name on the compose network.
/// The gateway's frontends, the database router's frontends and etcd keep the ports of
/// [`Ports::fixed`] and [`PatroniPorts::fixed`]; what differs is here. A launcher test
/// (`launcher/tests/compose_file.rs`) holds the compose file to it.
pub mod compose {
    /// The port every service instance's container listens on.
    pub const SERVICE_PORT: u16 = 8000;
    /// Patroni's REST API in each database node's container.
    pub const PATRONI_REST_PORT: u16 = 8008;
    /// PostgreSQL in each database node's container.
    pub const POSTGRES_PORT: u16 = 5432;
    /// The compose service of the database router (`haproxy-databases` on one machine).
    pub const DATABASE_ROUTER: &str = "db-router";
    /// The compose service of the gateway: one container, where one machine runs
    /// `gateway-<n>` processes.
    pub const GATEWAY: &str = "gateway";
    /// The URL of the database behind the router's port `port`, as the containers use it
    /// (each database is the `postgres` database of its cluster).
    pub fn database_url(port: u16) -> String {
        format!(
            "postgres://{}@{DATABASE_ROUTER}:{port}/{}",
            super::SUPERUSER,
            super::ADMIN_DATABASE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_layout_numbers_every_process_from_one() {
        let ports = Ports::fixed(Instances::default());
        assert_eq!(
            ports.processes(Service::Coordinator),
            [
                ("coordinator-1".to_owned(), 8401),
                ("coordinator-2".to_owned(), 8402)
            ]
        );
        assert_eq!(
            ports.gateways(),
            [
                ("gateway-1".to_owned(), 8009),
                ("gateway-2".to_owned(), 8019)
            ]
        );
        assert_eq!(ports.order, [8101, 8102]);
        assert_eq!(coordinator_id(2), "c2");
        assert_eq!(PatroniPorts::fixed().rest_ports()[..2], [8611, 8612]);
    }

    #[test]
    fn every_database_of_the_fixed_layout_is_named_like_its_service_on_its_own_port() {
        let ports = Ports::fixed(Instances::default());
        assert_eq!(
            ports.database_url(Service::Coordinator),
            "postgres://postgres@127.0.0.1:5504/coordinator"
        );
        assert_eq!(
            ports.admin_url(Service::Stock),
            "postgres://postgres@127.0.0.1:5502/postgres"
        );
    }
}
