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
//!
//! * [`config`]: what a system is started with ([`SystemConfig`]);
//! * `bring_up`: its pieces made and started in order;
//! * `readiness`: when it counts as up;
//! * [`crate::faults`]: what is done to it once it runs.

mod bring_up;
pub mod config;
mod readiness;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::patroni::{self, Member, PatroniNode};
use crate::postgres::PostgresInstance;
use crate::scratch::ScratchDir;
use crate::supervisor::Supervisor;
use crate::topology::local_url;
pub use crate::topology::{
    coordinator_id, gateway_process, Databases, Instances, PatroniPorts, Ports, Service, ETCD,
    HAPROXY_DATABASES, NODES_PER_DATABASE,
};
pub use config::{SystemConfig, BIN_DIR_VAR};

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
