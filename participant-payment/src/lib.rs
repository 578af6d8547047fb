//! The payment service: the public `/payment` API and the payment participant of checkout's
//! two-phase commit.
//!
//! Public routes change one user's credit, each in one statement, so concurrent calls lose no
//! update. The internal `POST /_2pc/prepare` runs one checkout's branch: it charges the user
//! with the same guarded statement as `pay` (one row, so there is no lock order to keep here),
//! refuses with a business no vote when the user is unknown or short of credit, and otherwise
//! prepares the transaction, which keeps the user's row locked until the coordinator commits or
//! rolls the branch back straight on this database (`twopc::finish`). Phase two never passes
//! through this service, so it may be down while its branches are finished.

pub mod db;
pub mod error;
pub mod prepare;
pub mod routes;

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::{migrate::Migrator, PgPool};
use tokio::{net::TcpListener, sync::watch};

/// This participant's name in gids and metric labels.
pub const PARTICIPANT: &str = "payment";

/// Prepare votes cast, by `participant` and `vote` (`yes`, `no`).
pub const VOTES: &str = "twopc_votes_total";

/// Markers are read only while a decision is unfinished, which recovery settles in seconds.
pub const MARKER_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often old markers are deleted.
pub const MARKER_GC_INTERVAL: Duration = Duration::from_secs(10 * 60);

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payment");

/// The service's configuration; tests build it directly.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "wdm-payment",
    about = "The payment service and 2PC participant"
)]
pub struct Config {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the payment database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Largest number of connections to the payment database.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
}

/// A service that is connected, migrated and bound, but not serving yet.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::init_metrics();
        let pool = service_kit::db::connect(
            &config.database_url,
            config.db_max_connections,
            Some(&MIGRATOR),
        )
        .await
        .context("connecting to the payment database")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            state: AppState { pool, metrics },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then stops the
    /// marker collector.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = watch::channel(());
        let collector = tokio::spawn(collect_markers(self.state.pool.clone(), stopped));
        tracing::info!("listening on {}", self.local_addr);
        let served =
            service_kit::http::serve(self.listener, routes::router(self.state), shutdown).await;
        drop(stop);
        if let Err(error) = collector.await {
            tracing::warn!(%error, "marker collector failed");
        }
        served
    }
}

/// Deletes old markers every [`MARKER_GC_INTERVAL`] until `stopped` says the service is
/// shutting down.
async fn collect_markers(pool: PgPool, mut stopped: watch::Receiver<()>) {
    let mut ticks = tokio::time::interval(MARKER_GC_INTERVAL);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = ticks.tick() => {}
        }
        match twopc::finish::gc_markers(&pool, MARKER_RETENTION).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted old 2pc markers"),
            Err(error) => tracing::warn!(%error, "cannot delete old 2pc markers"),
        }
    }
}
