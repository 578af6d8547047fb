//! The service shell every participant of checkout's two-phase commit runs in.
//!
//! A participant (stock, payment) owns one database and contributes two things: its public
//! routes and its branch's business work, described by [`Participant`]. This crate does the
//! rest the same way for all of them: configuration, connecting and migrating, `/health`,
//! `/metrics`, the background collection of old `twopc_markers`, and `POST /_2pc/prepare`,
//! which runs the work inside a [`twopc::branch::Branch`] and answers with the vote. Phase two
//! never passes through here: the coordinator commits or rolls back prepared branches straight
//! on the participant's database (`twopc::finish`).

mod prepare;
#[cfg(feature = "testing")]
pub mod testing;

use std::{future::Future, marker::PhantomData, net::SocketAddr};

use anyhow::Context;
use axum::{
    routing::{get, post},
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::tasks::Tasks;
use sqlx::{migrate::Migrator, PgPool};
use tokio::net::TcpListener;

pub use prepare::{prepare, PrepareError};

pub use twopc::VOTES_METRIC as VOTES;

/// A branch's business work: how a prepare request's work is read and what SQL does it. The
/// order service's own branch is one (it runs the same `POST /_2pc/prepare`, [`prepare`]).
pub trait BranchWork: Send + Sync + 'static {
    /// The participant's name in gids and metric labels.
    const NAME: &'static str;

    /// One member's work, read from the `work` of a prepare request.
    type Work: Send + Sync + 'static;

    /// Reads and checks one member's work; the error is the 400 reply.
    fn parse_work(work: serde_json::Value) -> Result<Self::Work, String>;

    /// The works of a branch's members (one, or several checkouts sharing the branch), done in
    /// order, all or none, as SQL text for [`twopc::branch::Branch::run`]: one call of the
    /// participant's SQL function, which refuses the first member that cannot be done by
    /// raising [`twopc::branch::REFUSE`] or [`twopc::branch::REFUSE_TRANSIENT`] with the
    /// member's position as the hint, its values formatted with [`twopc::sql`]. Row locks must
    /// be taken in sorted key order, every member's together: that is this database's part of
    /// the system's global lock order. `None` when a value cannot be written as SQL text (the
    /// work is then refused as invalid).
    fn sql(gid: &twopc::Gid, works: &[Self::Work]) -> Option<String>;
}

/// One participant's business: its database, its public routes and its branch's work.
pub trait Participant: BranchWork {
    /// Migrations of the participant's database; they must create `twopc_markers`.
    fn migrator() -> &'static Migrator;

    /// The public routes, under their full paths.
    fn routes() -> Router<PgPool>;
}

/// A participant service's configuration; tests build it directly.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to serve HTTP on (port 0 picks a free port).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// PostgreSQL URL of the participant's database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Largest number of connections to the participant's database.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

/// A participant service that is connected, migrated and bound, but not serving yet.
pub struct Server<P> {
    listener: TcpListener,
    local_addr: SocketAddr,
    pool: PgPool,
    metrics: PrometheusHandle,
    participant: PhantomData<fn() -> P>,
}

impl<P: Participant> Server<P> {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = service_kit::telemetry::init_metrics();
        service_kit::telemetry::describe(&[service_kit::telemetry::Metric {
            name: VOTES,
            kind: service_kit::telemetry::Kind::Counter,
            help: twopc::VOTES_METRIC_HELP,
        }]);
        service_kit::telemetry::register_counters(
            VOTES,
            &[
                &[("participant", P::NAME), ("vote", "yes")],
                &[("participant", P::NAME), ("vote", "no")],
            ],
        );
        let pool = service_kit::db::connect(
            &config.database_url,
            config.db_max_connections,
            Some(P::migrator()),
        )
        .await
        .with_context(|| format!("connecting to the {} database", P::NAME))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            pool,
            metrics,
            participant: PhantomData,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then stops the marker
    /// collector and the pool's watch.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let tasks = Tasks::new();
        service_kit::db::collect_markers(&tasks, self.pool.clone());
        service_kit::db::watch(&tasks, self.pool.clone(), P::NAME);
        tracing::info!(participant = P::NAME, "listening on {}", self.local_addr);
        let router = router::<P>(self.pool, self.metrics);
        service_kit::http::serve(self.listener, router, shutdown, &tasks).await
    }
}

fn router<P: Participant>(pool: PgPool, metrics: PrometheusHandle) -> Router {
    P::routes()
        .route(twopc::wire::routes::PREPARE, post(prepare::prepare::<P>))
        .route("/health", get(service_kit::http::health))
        .route(
            "/metrics",
            get(move || std::future::ready(service_kit::telemetry::render(&metrics))),
        )
        .route_layer(axum::middleware::from_fn(
            service_kit::telemetry::track_http,
        ))
        .with_state(pool)
}

/// The whole `main` of a participant's binary: parses a [`Config`] from the command line and
/// the environment (as command `name`, described by `about`), then runs participant `P` until
/// SIGINT/SIGTERM.
pub async fn run_main<P: Participant>(
    name: &'static str,
    about: &'static str,
) -> anyhow::Result<()> {
    use clap::{Args, FromArgMatches};

    service_kit::telemetry::init_logs();
    let command = Config::augment_args(clap::Command::new(name))
        .about(about)
        .long_about(None);
    let config = Config::from_arg_matches(&command.get_matches())?;
    let server = Server::<P>::build(config).await?;
    server
        .run_until(service_kit::http::shutdown_signal())
        .await?;
    Ok(())
}
