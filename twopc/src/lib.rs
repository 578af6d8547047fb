//! The two-phase-commit protocol spoken between the coordinator and its participants.
//!
//! * [`gid`]: the global transaction id of one branch, `wdm_<coordinator>_<txid>_<participant>`.
//!   It is formatted into SQL text (PREPARE takes no bind parameters), so it is built only from
//!   characters we generate and is validated wherever it is read back.
//! * [`deadline`]: the wall-clock deadline every request carries, so that no step outlives
//!   the caller that waits for it.
//! * [`wire`]: the JSON bodies of the internal HTTP API: the coordinator's transaction request and
//!   outcome, a participant's prepare request and vote.
//! * [`branch`]: the participant side of phase one. The business work runs in a local
//!   transaction, the branch's gid goes into the `twopc_markers` table, then
//!   `PREPARE TRANSACTION` makes the vote durable.
//! * [`finish`]: phase two and recovery, straight on a participant's database: `COMMIT PREPARED`
//!   and `ROLLBACK PREPARED` that tell "already committed" from "lost" by the marker, and the
//!   listing of prepared branches. They need no business knowledge, so the coordinator and the
//!   recovery CLI run them without the participant service being up.
//! * [`sql`]: values formatted into SQL text, escaped, for a branch sent as one query.
//! * [`sqlstate`]: reading PostgreSQL's SQLSTATE from an error, for the modules above and every
//!   service that gives a code a meaning.

pub mod branch;
pub mod deadline;
pub mod finish;
pub mod gid;
pub mod sql;
pub mod sqlstate;
pub mod wire;

pub use deadline::Deadline;
pub use gid::{Gid, GidError};

/// The metric every participant counts its prepare votes in, by `participant` and `vote`
/// (`yes`, `no`). One name for every side that votes (the order service's own
/// branch, stock and payment), so one query sums them.
pub const VOTES_METRIC: &str = "twopc_votes_total";
/// The `# HELP` text of [`VOTES_METRIC`].
pub const VOTES_METRIC_HELP: &str = "Prepare votes cast, by participant and vote (yes, no).";
