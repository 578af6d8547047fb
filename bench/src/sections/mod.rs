//! The measured sections and what they share: the running system, the gateway client, and
//! which batch-loaded data is in place, so that a section loads only what it lacks.

mod batch;
mod ceiling;
mod checkout;
mod consistency;
mod crud;
mod failover;
mod faults;
mod overload;
mod stress;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use launcher::{Databases, Instances, ScratchDir, Service, System, SystemConfig};

use crate::gateway::{Gateway, Requests};
use crate::load::Stats;
use crate::report::{Report, Row};
pub use crate::section::Section;

/// Starting credit of every batch-loaded user and starting stock of every batch-loaded item:
/// enough that no checkout of the bench runs out.
pub const PLENTY: i64 = 1_000_000;
/// Price of every batch-loaded item (an order of two items costs 2).
pub const ITEM_PRICE: i64 = 1;
/// How long the system with Patroni clusters may take to start (at least).
const HA_READY_TIMEOUT: Duration = Duration::from_secs(180);

impl Section {
    /// Measures this section into `report`.
    pub async fn run(self, bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
        match self {
            Section::Batch => batch::run(bench, report).await,
            Section::Crud => crud::run(bench, report).await,
            Section::Checkout | Section::HaCheckout => checkout::run(bench, report, self).await,
            Section::Ceiling => ceiling::run(bench, report).await,
            Section::Stress => stress::run(bench, report).await,
            Section::Overload => overload::run(bench, report).await,
            Section::Consistency => consistency::run(bench, report).await,
            Section::Failover => failover::run(bench, report).await,
            Section::Faults => faults::run(bench, report).await,
        }
    }
}

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Users, items and orders loaded by `batch_init`.
    pub rows: i64,
    /// Each measured phase.
    pub duration: Duration,
    pub quick: bool,
}

impl Scale {
    pub fn new(quick: bool, duration: Option<Duration>) -> Self {
        let (rows, default_duration) = if quick {
            (10_000, Duration::from_secs(2))
        } else {
            (100_000, Duration::from_secs(10))
        };
        Scale {
            rows,
            duration: duration.unwrap_or(default_duration),
            quick,
        }
    }

    /// The concurrency levels of `checkout` and `ceiling`, each with its own range of order
    /// ids, so that every order is checked out once in each section: 4 clients (the latency
    /// of a checkout that hardly queues) on a tenth of the orders, 16 and 64 on the rest.
    pub fn checkout_runs(&self) -> [(usize, Range<i64>); 3] {
        let tenth = self.rows / 10;
        let middle = tenth + (self.rows - tenth) / 2;
        [(4, 0..tenth), (16, tenth..middle), (64, middle..self.rows)]
    }
}

/// State of the batch-loaded data ("0".."rows-1").
#[derive(Debug, Default)]
struct Loaded {
    /// Users with [`PLENTY`] credit and items with [`PLENTY`] stock.
    catalog: bool,
    /// The orders exist.
    orders: bool,
    /// ...and none was checked out since they were loaded.
    orders_unpaid: bool,
}

/// The running system and what the sections share. Dropping it stops the system.
pub struct Bench {
    /// Declared before the scratch directory: stopped before the directory is removed.
    system: System,
    _scratch: ScratchDir,
    gateway: Gateway,
    scale: Scale,
    stress_clients: usize,
    loaded: Loaded,
    /// This system's fresh-checkout rows by clients, for the ceiling's ratio.
    checkout: BTreeMap<usize, Row>,
    /// The single-database system's fresh-checkout rows by clients, for the HA ratios (empty
    /// on that system itself).
    baseline: BTreeMap<usize, Row>,
    /// The unit of `/proc`'s CPU times.
    ticks_per_second: u64,
}

impl Bench {
    /// Starts a private system on free ports with the binaries of `bin_dir` and `databases`;
    /// `baseline`: see [`Bench::checkout_rows`].
    pub async fn start(
        bin_dir: &Path,
        databases: Databases,
        scale: Scale,
        stress_clients: usize,
        baseline: BTreeMap<usize, Row>,
    ) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("bench")?;
        let mut config =
            SystemConfig::with_free_ports(scratch.path(), bin_dir, Instances::default())?
                .with_databases(databases);
        if matches!(config.databases, Databases::Patroni(_)) {
            // Eight Patroni nodes bootstrap and replicate on a machine shared with the bench.
            config.ready_timeout = config.ready_timeout.max(HA_READY_TIMEOUT);
        }
        let system = System::start(config).await.context("starting the system")?;
        eprintln!(
            "system up: gateway {}, data in {}",
            system.gateway_url(),
            scratch.path().display()
        );
        let gateway = crate::gateway::new(system.gateway_url());
        Ok(Bench {
            system,
            _scratch: scratch,
            gateway,
            scale,
            stress_clients,
            loaded: Loaded::default(),
            checkout: BTreeMap::new(),
            baseline,
            ticks_per_second: crate::unix::clock_ticks_per_second(),
        })
    }

    /// The fresh-checkout rows measured on this system, by clients: the baseline of the HA
    /// system's ratios.
    pub fn checkout_rows(&self) -> &BTreeMap<usize, Row> {
        &self.checkout
    }

    fn paths(&self) -> BatchPaths {
        BatchPaths::new(self.scale.rows)
    }

    /// Loads users and items unless they are in place.
    async fn ensure_catalog(&mut self) -> anyhow::Result<()> {
        if !self.loaded.catalog {
            eprintln!("loading {} users and items", self.scale.rows);
            let paths = self.paths();
            self.gateway.post_ok(&paths.users).await?;
            self.gateway.post_ok(&paths.items).await?;
            self.loaded.catalog = true;
        }
        Ok(())
    }

    /// Loads the orders unless they are in place (paid or not).
    async fn ensure_orders(&mut self) -> anyhow::Result<()> {
        if !self.loaded.orders {
            self.reload_orders().await?;
        }
        Ok(())
    }

    /// Makes sure no batch-loaded order is paid, reloading them if some were checked out.
    async fn ensure_unpaid_orders(&mut self) -> anyhow::Result<()> {
        if !self.loaded.orders_unpaid {
            self.reload_orders().await?;
        }
        Ok(())
    }

    async fn reload_orders(&mut self) -> anyhow::Result<()> {
        eprintln!("loading {} orders", self.scale.rows);
        self.gateway.post_ok(&self.paths().orders).await?;
        self.loaded.orders = true;
        self.loaded.orders_unpaid = true;
        Ok(())
    }

    fn database_url(&self, service: Service) -> String {
        self.system.database_url(service)
    }
}

/// The `batch_init` routes for `rows` users, items and orders.
struct BatchPaths {
    users: String,
    items: String,
    orders: String,
}

impl BatchPaths {
    fn new(rows: i64) -> Self {
        BatchPaths {
            users: format!("/payment/batch_init/{rows}/{PLENTY}"),
            items: format!("/stock/batch_init/{rows}/{PLENTY}/{ITEM_PRICE}"),
            orders: format!("/orders/batch_init/{rows}/{rows}/{rows}/{ITEM_PRICE}"),
        }
    }
}

/// A uniformly random id of a batch-loaded row.
fn random_id(rows: i64) -> i64 {
    rand::random_range(0..rows)
}

/// Hands out each id of a range once, to whichever worker asks first; cheap to clone.
#[derive(Debug, Clone)]
struct EachOnce {
    next: Arc<AtomicI64>,
    end: i64,
}

impl EachOnce {
    fn new(ids: &Range<i64>) -> Self {
        EachOnce {
            next: Arc::new(AtomicI64::new(ids.start)),
            end: ids.end,
        }
    }

    /// The next id, or `None` once all were taken.
    fn take(&self) -> Option<i64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        (id < self.end).then_some(id)
    }
}

/// The note a run gets when it took every id it was given before its time was up.
fn exhausted_note(stats: &Stats, ids: &Range<i64>) -> Option<String> {
    (stats.count() >= (ids.end - ids.start) as u64).then(|| {
        format!(
            "ran out of orders ({}) after {:.1} s",
            ids.end - ids.start,
            stats.elapsed.as_secs_f64()
        )
    })
}
