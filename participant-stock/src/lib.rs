//! The stock service: the public `/stock` API and the stock participant of checkout's
//! two-phase commit.
//!
//! Public routes change stock one item at a time, each in one statement, so concurrent calls
//! lose no update. A checkout's stock branch (see [`prepare`]: one statement, the database's
//! `stock_take_batch`, sent with the branch's opening and prepare in one round trip) locks the
//! checkout's items in sorted id order (this database's part of the system's global lock order, which keeps two
//! checkouts from waiting on each other across databases), votes no when an item is unknown or
//! short, and otherwise subtracts every quantity and is prepared, which keeps those rows locked
//! until the coordinator commits or rolls the branch back straight on this database. The
//! service shell around it (config, health, metrics, the prepare endpoint, marker collection)
//! is `participant_server`'s.

pub mod db;
pub mod error;
pub mod prepare;
pub mod routes;

use sqlx::{migrate::Migrator, PgPool};

pub use participant_server::{Config, VOTES};

/// This participant's name in gids and metric labels.
pub const PARTICIPANT: &str = "stock";

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/stock");

/// The stock service, ready to serve.
pub type Server = participant_server::Server<Stock>;

pub struct Stock;

impl participant_server::BranchWork for Stock {
    const NAME: &'static str = PARTICIPANT;
    type Work = prepare::StockWork;

    fn parse_work(work: serde_json::Value) -> Result<Self::Work, String> {
        prepare::StockWork::from_json(work).map_err(|error| error.to_string())
    }

    fn sql(_gid: &twopc::Gid, works: &[Self::Work]) -> Option<String> {
        prepare::take_sql(works)
    }
}

impl participant_server::Participant for Stock {
    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes() -> axum::Router<PgPool> {
        routes::router()
    }
}
