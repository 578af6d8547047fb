//! The order's own branch of a checkout: `POST /_2pc/prepare` with `{order_id, version}` (or
//! an array of them, a batch's), the same endpoint the stock and payment participants serve.
//!
//! The branch pays the order only for the transaction that holds the order's checkout claim
//! (`orders.checkout_txid`, see `checkout`), so a transaction that was given up on and
//! superseded can never commit alongside its successor.

use serde::{Deserialize, Serialize};
use twopc::Gid;

use crate::telemetry;

/// The work of the order branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderWork {
    pub order_id: String,
    /// The order's version when it was priced; a concurrent addItem makes the branch vote no.
    pub version: i64,
}

/// The participant name of the order branch.
pub const PARTICIPANT: &str = "order";
/// Refusal code for an order that is paid already.
pub const ALREADY_PAID: &str = "already_paid";

/// Exports the order branch's votes as 0 from start-up, as the participants do theirs.
pub fn register_votes() {
    service_kit::telemetry::register_counters(
        telemetry::VOTES,
        &[
            &[("participant", PARTICIPANT), ("vote", "yes")],
            &[("participant", PARTICIPANT), ("vote", "no")],
        ],
    );
}

/// The order branch, run by the participants' own `POST /_2pc/prepare`
/// ([`participant_server::prepare`]) on the order database.
pub struct OrderBranch;

impl participant_server::BranchWork for OrderBranch {
    const NAME: &'static str = PARTICIPANT;
    type Work = OrderWork;

    fn parse_work(work: serde_json::Value) -> Result<Self::Work, String> {
        serde_json::from_value(work).map_err(|error| format!("order work: {error}"))
    }

    /// Every member's order paid, all or none: the database's `order_pay_batch` (migration
    /// `0005_pay_for_a_batch.sql`), which pays an order only for the transaction that holds its
    /// claim, `gid`'s, at the version it was priced at, and refuses the first that cannot be
    /// paid with why. The order rows need no common lock order: each is claimed by this very
    /// transaction, so no other branch waits for it.
    fn sql(gid: &Gid, works: &[OrderWork]) -> Option<String> {
        let ids: Vec<&str> = works.iter().map(|work| work.order_id.as_str()).collect();
        let versions: Vec<i64> = works.iter().map(|work| work.version).collect();
        Some(format!(
            "select order_pay_batch({}, {}, '{}')",
            twopc::sql::text_array(&ids)?,
            twopc::sql::bigint_array(&versions),
            gid.txid()
        ))
    }
}
