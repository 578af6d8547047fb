//! The two-phase-commit coordinator.
//!
//! The order service asks it to run one global transaction per checkout. It stays generic: it
//! knows participants, gids and decisions, never stock or credit. Participants vote over HTTP
//! (`POST /_2pc/prepare`, where their business work runs and ends in `PREPARE TRANSACTION`);
//! phase two and recovery need no business knowledge, so the coordinator finishes branches
//! directly in each participant's database with `COMMIT PREPARED` / `ROLLBACK PREPARED`. That
//! saves a hop per branch and lets a transaction finish while a participant service is down.
//!
//! * [`protocol`]: presumed-abort 2PC, branches prepared in the global lock order.
//! * [`phase_two`]: finishing a decided transaction's branches in their databases.
//! * [`hazard`]: a branch found contradicting its decision, reported, never guessed around.
//! * [`log`]: the decision log in the coordinator's own database: group commit, identity lock.
//! * [`recovery`]: finishing in-doubt branches, shared with the `wdm-recovery` CLI.
//! * [`cli`]: the `wdm-recovery` operators' tool.
//! * [`routes`]: `POST /_2pc/transactions`, `GET /_2pc/transactions/{txid}`, health, metrics.

pub mod cli;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod hazard;
pub mod inflight;
pub mod log;
pub mod participants;
pub mod phase_two;
pub mod protocol;
pub mod recovery;
pub mod routes;
pub mod telemetry;

use std::{net::SocketAddr, sync::Arc};

use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::tasks::Tasks;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::Config;

pub static MIGRATIONS: Migrator = sqlx::migrate!("../migrations/coordinator");

/// Shared state of the running coordinator.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub log: log::DecisionLog,
    pub participants: Arc<participants::Participants>,
    pub inflight: Arc<inflight::InFlight>,
    pub http: reqwest::Client,
    pub metrics: PrometheusHandle,
    /// Every task besides the request handlers: transactions, phase two, recovery rounds, the
    /// decision log's writers.
    pub tasks: Tasks,
}

/// A coordinator that has taken its identity, recovered, and bound its port.
pub struct Coordinator {
    app: App,
    listener: TcpListener,
}

impl Coordinator {
    /// Connects to the log (waiting for the identity lock), runs a first recovery round, and
    /// binds. Nothing is served before recovery has looked at every reachable participant.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::init_metrics();
        telemetry::register();
        let pool = service_kit::db::connect(
            &config.database_url,
            config.db_max_connections,
            Some(&MIGRATIONS),
        )
        .await?;
        let tasks = Tasks::new();
        let log = log::DecisionLog::open(&config.database_url, &config.id, pool, &tasks).await?;
        let participants =
            participants::Participants::connect(&config.participants, config.db_max_connections)?;
        let app = App {
            // Every call sets its own timeout from its deadline; this bound is a backstop.
            http: service_kit::http::client(std::time::Duration::from_secs(30)),
            config: Arc::new(config),
            log,
            participants: Arc::new(participants),
            inflight: Arc::default(),
            metrics,
            tasks,
        };
        match recovery::round(&app).await {
            Ok(applied) => tracing::info!(?applied, "start-up recovery done"),
            Err(error) => {
                tracing::warn!(%error, "start-up recovery incomplete; retrying in the background")
            }
        }
        let listener = TcpListener::bind(app.config.listen).await?;
        Ok(Self { app, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.app.config.listen)
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` resolves; recovery rounds run in the background meanwhile.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr();
        let app = self.app;
        for participant in app.participants.iter() {
            participant.instances.watch(&app.tasks, app.http.clone());
        }
        let rounds = app.clone();
        app.tasks.every(app.config.recovery_interval(), move || {
            recovery_round(rounds.clone())
        });
        tracing::info!(%addr, id = %app.config.id, "listening");
        let tasks = app.tasks.clone();
        // The transactions in progress run to their ends (each is bounded by its deadline);
        // the log's writers end once the last handle to the log, in those tasks, is dropped.
        service_kit::http::serve(self.listener, routes::router(app), shutdown, &tasks).await
    }
}

/// Longest a background recovery round may take before it is abandoned (its actions are each
/// safe to repeat) and the next one starts.
const ROUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One background recovery round. A round stuck on an unresponsive database must not stop
/// every later round.
async fn recovery_round(app: App) {
    match tokio::time::timeout(ROUND_TIMEOUT, recovery::round(&app)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "recovery round failed");
            metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => "error").increment(1);
        }
        Err(_) => {
            tracing::warn!("recovery round timed out");
            metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => "error").increment(1);
        }
    }
}
