//! The payment service: the public `/payment` API and the payment participant of checkout's
//! two-phase commit.
//!
//! Public routes change one user's credit, each in one statement, so concurrent calls lose no
//! update. A checkout's payment branch (see [`prepare`]: one statement, the database's
//! `payment_charge_batch`, sent with the branch's opening and prepare in one round trip, for one
//! checkout or a batch of them) locks the members' users in sorted id order; it votes no when a
//! user is unknown or short of credit, and otherwise is prepared, which keeps the users' rows
//! locked until the coordinator commits or rolls the branch back straight on this
//! database. The service shell around it (config, health, metrics, the prepare endpoint, marker
//! collection) is `participant_server`'s.

pub mod db;
pub mod error;
pub mod prepare;
pub mod routes;

use sqlx::{migrate::Migrator, PgPool};

pub use participant_server::{Config, VOTES};

/// This participant's name in gids and metric labels.
pub const PARTICIPANT: &str = "payment";

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payment");

/// The payment service, ready to serve.
pub type Server = participant_server::Server<Payment>;

pub struct Payment;

impl participant_server::BranchWork for Payment {
    const NAME: &'static str = PARTICIPANT;
    type Work = prepare::PaymentWork;

    fn parse_work(work: serde_json::Value) -> Result<Self::Work, String> {
        prepare::PaymentWork::from_json(work).map_err(|error| error.to_string())
    }

    fn sql(_gid: &twopc::Gid, works: &[Self::Work]) -> Option<String> {
        prepare::charge_sql(works)
    }
}

impl participant_server::Participant for Payment {
    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes() -> axum::Router<PgPool> {
        routes::router()
    }
}
