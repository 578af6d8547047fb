//! The payment service: the public `/payment` API and the payment participant of checkout's
//! two-phase commit.
//!
//! Public routes change one user's credit, each in one statement, so concurrent calls lose no
//! update. A checkout's payment branch (see [`prepare`]) charges the user with one guarded
//! statement, the database's `payment_charge` (one row, so there is no lock order to keep
//! within this database), sent with the branch's opening and prepare in one round trip; it
//! votes no when the user is unknown or short of credit, and otherwise is prepared, which keeps the
//! user's row locked until the coordinator commits or rolls the branch back straight on this
//! database. The service shell around it (config, health, metrics, the prepare endpoint, marker
//! collection) is `participant_server`'s.

pub mod db;
pub mod error;
pub mod prepare;
pub mod routes;

use sqlx::{migrate::Migrator, PgConnection, PgPool};
use twopc::wire::Refusal;

pub use participant_server::{Config, VOTES};

/// This participant's name in gids and metric labels.
pub const PARTICIPANT: &str = "payment";

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/payment");

/// The payment service, ready to serve.
pub type Server = participant_server::Server<Payment>;

pub struct Payment;

impl participant_server::Participant for Payment {
    const NAME: &'static str = PARTICIPANT;
    type Work = prepare::PaymentWork;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn routes() -> axum::Router<PgPool> {
        routes::router()
    }

    fn parse_work(work: serde_json::Value) -> Result<Self::Work, String> {
        prepare::PaymentWork::from_json(work).map_err(|error| error.to_string())
    }

    async fn apply(
        conn: &mut PgConnection,
        work: &Self::Work,
    ) -> sqlx::Result<Result<(), Refusal>> {
        prepare::charge(conn, work).await
    }

    fn one_trip(work: &Self::Work) -> Option<String> {
        prepare::charge_sql(work)
    }

    async fn apply_batch(
        conn: &mut PgConnection,
        works: &[Self::Work],
    ) -> sqlx::Result<Result<(), (usize, Refusal)>> {
        prepare::charge_batch(conn, works).await
    }
}
