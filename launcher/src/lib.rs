//! The launcher: runs the checkout system on one machine, like `docker compose` with
//! `restart: always`, but for plain processes.
//!
//! `scripts/up` runs its binary (`wdm-launcher up`); the system tests and benchmarks use the
//! library to start private copies of the system and to kill, stop and restart its processes
//! while load runs. Pieces:
//! - [`supervisor`]: named children in their own process groups, restarted when they exit;
//! - [`postgres`]: a PostgreSQL instance in a directory (initdb, settings, the postmaster);
//! - [`haproxy`]: the gateway's configuration and process, and the database router's;
//! - [`etcd`], [`patroni`]: the high-availability mode's consensus store and database nodes;
//! - [`monitoring`]: Prometheus scraping the system, its alert rules and console dashboards;
//! - [`topology`]: the processes, their names and ports, and the fixed layout of `scripts/up`;
//! - [`system`]: all of it wired together, with readiness checks;
//! - [`faults`]: crashes, freezes and outages injected into a running system;
//! - [`cli`]: the `wdm-launcher` commands.

pub mod cli;
pub mod error;
pub mod etcd;
pub mod faults;
pub mod haproxy;
pub mod monitoring;
pub mod patroni;
pub mod ports;
pub mod postgres;
pub mod scratch;
pub mod supervisor;
pub mod system;
pub mod topology;
pub mod unix;

pub use error::{Error, Result};
pub use faults::Failover;
pub use scratch::ScratchDir;
pub use supervisor::{CommandSpec, Supervisor, Target};
pub use system::{System, SystemConfig};
pub use topology::{Databases, Instances, PatroniPorts, Ports, Service};
pub use unix::Signal;
