//! Metric names of the order service.

/// Checkouts answered, by `outcome` (committed / already_paid / rejected / failed / unknown)
/// and `reason` (the refusal code; a small fixed set).
pub const CHECKOUTS: &str = "checkouts_total";
/// Checkout latency in seconds, by `outcome`.
pub const CHECKOUT_DURATION: &str = "checkout_duration_seconds";
/// Votes of the order branch, by `participant` and `vote`.
pub const VOTES: &str = "twopc_votes_total";
