//! The order service: the public `/orders` API.
//!
//! Orders live in the order database. `addItem` asks the stock service (over the internal
//! network, never the gateway) for the item's price. `checkout` hands one global transaction to
//! the coordinator with three branches, in the system's global lock order:
//!
//! 1. `order` (this service's own `/_2pc/prepare`): marks the order paid, if it is still unpaid
//!    and unchanged since it was priced;
//! 2. `payment`: charges the user;
//! 3. `stock`: takes every item (quantities of one item summed).
//!
//! Under load, the checkouts that are ready at the same moment share one such transaction,
//! each branch carrying all of their works (see [`batch`]).
//!
//! The order is paid if and only if the transaction committed, so `paid` is the truth about a
//! checkout even when a crash cut its reply.

pub mod admission;
pub mod batch;
pub mod checkout;
pub mod config;
pub mod db;
pub mod error;
pub mod prepare;
pub mod routes;
pub mod stock;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::{peers::Peers, tasks::Tasks};
use sqlx::{migrate::Migrator, PgPool};
use tokio::net::TcpListener;

pub use config::Config;

pub static MIGRATIONS: Migrator = sqlx::migrate!("../migrations/order");

/// Shared state of the running service.
#[derive(Clone)]
pub struct State {
    pub config: Arc<Config>,
    pub pool: PgPool,
    /// The same database with `synchronous_commit = off`, for checkout claims only (see
    /// [`db::claim`] for why that is safe).
    pub claims: PgPool,
    /// The coordinators, any of which can run any checkout and tell any outcome (they share
    /// the decision log).
    pub coordinators: Arc<Peers>,
    /// The checkouts in flight and the queue in front of them.
    pub admission: Arc<admission::Admission>,
    /// The batch forming and the batches in flight (see [`batch`]).
    pub batches: Arc<checkout::Batches>,
    /// Items lately refused out of stock, looked at before checkouts of them (see [`stock`]).
    pub sold_out: Arc<stock::SoldOut>,
    pub http: reqwest::Client,
    pub metrics: PrometheusHandle,
    /// Every task besides the request handlers: batches, the marker collector, the pool's
    /// watch, the coordinators' probes.
    pub tasks: Tasks,
}

/// The order database, for the branch's `POST /_2pc/prepare` ([`participant_server::prepare`]).
impl axum::extract::FromRef<State> for PgPool {
    fn from_ref(state: &State) -> Self {
        state.pool.clone()
    }
}

/// The order service, built and bound, ready to serve.
pub struct Server {
    state: State,
    listener: TcpListener,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::init_metrics();
        telemetry::register();
        prepare::register_votes();
        let pool = service_kit::db::connect(
            &config.database_url,
            config.db_max_connections,
            Some(&MIGRATIONS),
        )
        .await?;
        let claims =
            service_kit::db::pool_options(config.db_max_connections, Duration::from_secs(5))
                .connect_lazy_with(
                    (*pool.connect_options())
                        .clone()
                        .options([("synchronous_commit", "off")]),
                );
        let listener = TcpListener::bind(config.listen).await?;
        let tasks = Tasks::new();
        let state = State {
            // Every call sets its own timeout from its deadline; this bound is a backstop.
            http: service_kit::http::client(config.checkout_deadline()),
            coordinators: Arc::new(Peers::new("coordinator", config.coordinator_urls.clone())),
            admission: Arc::new(admission::Admission::new(
                config.checkouts_in_flight as usize,
                config.checkout_queue(),
            )),
            batches: Arc::new(batch::Batches::new(
                config.checkout_batches as usize,
                config.checkout_batch_max as usize,
                Duration::from_millis(config.checkout_batch_patience_ms),
                config.phase_one(),
                config.phase_two_wait(),
                tasks.clone(),
            )),
            sold_out: Arc::default(),
            config: Arc::new(config),
            pool,
            claims,
            metrics,
            tasks,
        };
        Ok(Self { state, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.listen)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let tasks = self.state.tasks.clone();
        service_kit::db::collect_markers(&tasks, self.state.pool.clone());
        service_kit::db::watch(&tasks, self.state.pool.clone(), prepare::PARTICIPANT);
        self.state
            .coordinators
            .watch(&tasks, self.state.http.clone());
        tracing::info!(addr = %self.local_addr(), "listening");
        let router = routes::router(self.state);
        service_kit::http::serve(self.listener, router, shutdown, &tasks).await
    }
}
