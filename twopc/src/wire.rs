//! JSON bodies of the internal HTTP API.
//!
//! * `POST /_2pc/transactions` on the coordinator: a [`TransactionRequest`], answered with an
//!   [`Outcome`] once the transaction is decided and phase two is done (or handed to recovery).
//! * `GET /_2pc/transactions/{txid}` on the coordinator: the [`Outcome`] of a transaction whose
//!   reply was lost, `pending` while it is still running.
//! * `POST /_2pc/prepare` on a participant: a [`PrepareRequest`], answered with a [`Vote`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Deadline;

/// One global transaction: the branches are prepared one after another in this order, which is
/// the system's global lock order (see the coordinator's documentation), except those marked
/// [`BranchRequest::concurrent`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionRequest {
    pub txid: Uuid,
    pub branches: Vec<BranchRequest>,
    /// Every vote and the commit decision happen before this, or the transaction aborts. The
    /// coordinator may move it earlier (its own bound), never later.
    pub deadline: Deadline,
    /// The coordinator answers by then at the latest, handing an unfinished phase two to the
    /// background; the caller waits a little longer than this for the reply.
    pub reply_by: Deadline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BranchRequest {
    /// The participant's name, as configured at the coordinator.
    pub participant: String,
    /// The participant's business work; opaque to the coordinator. A JSON array is a batch:
    /// the works of several members (checkouts) that share this one transaction, done in
    /// order, all or none (see [`Refusal::member`]).
    pub work: serde_json::Value,
    /// The caller's promise that no other transaction's branch can want this branch's locks
    /// (the order branch locks only orders this transaction has claimed), so it cannot be part
    /// of a cycle of waits: the coordinator prepares it alongside the branches that keep the
    /// global lock order instead of taking its turn among them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub gid: String,
    /// The participant votes by then: its pool wait, lock waits and statements are bounded by
    /// it, and `PREPARE TRANSACTION` is refused where it lands once it has passed.
    pub deadline: Deadline,
    pub work: serde_json::Value,
    /// This gid was sent before and its answer lost: the branch may be prepared already, and
    /// the participant looks first (a repeated prepare of a prepared branch votes yes).
    #[serde(default)]
    pub repeat: bool,
}

/// Why a participant (or the coordinator on its behalf) refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable reason, e.g. `out_of_stock`, `insufficient_credit`, `already_paid`.
    pub code: String,
    /// One short sentence for the client.
    pub message: String,
    /// True for business refusals (the same request would be refused again); false for
    /// transient ones (a timeout, an unreachable participant, a lock wait that ran out).
    pub business: bool,
    /// In a batch, the position of the member whose work was refused, in the work array the
    /// participant was sent. The members are done in order, so a business refusal is about
    /// the state the members before it left: only for the first member is it the truth about
    /// that member alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<usize>,
}

impl Refusal {
    /// The same refusal, about member `index` of a batch.
    pub fn of_member(self, index: usize) -> Self {
        Self {
            member: Some(index),
            ..self
        }
    }

    pub fn business(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            business: true,
            member: None,
        }
    }

    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            business: false,
            member: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "vote", rename_all = "snake_case")]
pub enum Vote {
    Yes,
    No(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Committed, and every branch is: a read right after sees the writes.
    Committed,
    /// The commit is decided (durable) and some branch is still being committed, because its
    /// database was away for the whole reply wait. It will commit; ask again to learn when a
    /// read sees it.
    Committing,
    Aborted {
        /// The participant that refused, or `coordinator`.
        participant: String,
        #[serde(flatten)]
        refusal: Refusal,
    },
    /// Still being decided or finished by the live coordinator; ask again.
    Pending,
    /// This coordinator is not running it and no decision for it exists: it has not reached
    /// a coordinator yet, runs on another one, or was lost with one that stopped. Ask the
    /// others, or ask with [`StatusQuery::fence`] to settle it as aborted now.
    Unknown,
}

/// Query of `GET /_2pc/transactions/{txid}`: the deadline the caller gave the transaction.
/// Once it has passed, a transaction without a decision can be fenced off (an abort record
/// that no commit can overtake) and reported aborted by any coordinator.
///
/// With `fence`, a coordinator that would answer [`Outcome::Unknown`] fences the transaction
/// off at once instead. That is safe at any time (the primary key of the decision log decides
/// between a fence and a commit decision); it only spends a transaction that might still
/// have reached a coordinator, so a caller asks for it once no coordinator has heard of the
/// transaction for a while.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StatusQuery {
    pub deadline: Deadline,
    #[serde(default)]
    pub fence: bool,
}

/// Names of the internal routes, shared by both sides.
pub mod routes {
    pub const TRANSACTIONS: &str = "/_2pc/transactions";
    pub const TRANSACTION: &str = "/_2pc/transactions/{txid}";
    pub const PREPARE: &str = "/_2pc/prepare";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_and_outcomes_have_a_flat_tagged_form() {
        let no = Vote::No(Refusal::business("out_of_stock", "item 1 has 0 left"));
        let json = serde_json::to_value(&no).unwrap();
        assert_eq!(json["vote"], "no");
        assert_eq!(json["code"], "out_of_stock");
        assert_eq!(serde_json::from_value::<Vote>(json).unwrap(), no);

        let aborted = Outcome::Aborted {
            participant: "stock".into(),
            refusal: Refusal::transient("unreachable", "stock did not answer"),
        };
        let json = serde_json::to_value(&aborted).unwrap();
        assert_eq!(json["outcome"], "aborted");
        assert_eq!(json["business"], false);
        assert_eq!(serde_json::from_value::<Outcome>(json).unwrap(), aborted);
    }
}
