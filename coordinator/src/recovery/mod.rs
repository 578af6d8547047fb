//! Recovery of in-doubt branches: one implementation for the coordinator's own rounds (at
//! start-up before serving, then periodically) and for the operators' CLI.
//!
//! A round follows the order of reads that keeps it from racing live transactions:
//! `P` = prepared branches per participant, `A` = transactions this process is running,
//! `T` = unfinished commit decisions, `Q` = prepared branches again. Then
//!
//! | branch                                  | action                                      |
//! |-----------------------------------------|---------------------------------------------|
//! | decision in `T`, txid in `A`            | leave it: the live transaction finishes it  |
//! | decision in `T`, branch in `P` and `Q`  | `COMMIT PREPARED`                           |
//! | decision in `T`, branch in neither      | marker present: already committed; absent: **hazard**, reported, never guessed |
//! | branch only in `Q`                      | prepared after `P` was read: next round      |
//! | in `P` and `Q`, no decision, own, not in `A` | `ROLLBACK PREPARED` (presumed abort)    |
//! | in `P` and `Q`, no decision, another coordinator's (or the CLI's view) | once older than the grace age, or at once if that coordinator is not alive: fence, then roll back (or commit, if the fence finds a commit) |
//! | abort record (fenced)                   | `ROLLBACK PREPARED`                          |
//!
//! A decision whose branches are all committed is marked finished.
//!
//! **Own and peers' branches.** Presumed abort is only sound for the coordinator that holds a
//! transaction's identity lock: nobody else can be about to log its commit. Every round also
//! looks at the other coordinators' branches, so that a coordinator that is stopped or gone
//! for good does not keep its rows locked: a peer's branch without a decision is first
//! *fenced* (an abort record under its txid, which no commit decision can overtake, see
//! `log::fence`), then rolled back; if the fence finds a commit instead, the branch is
//! committed. The grace age keeps rounds from fencing a live peer's transaction: a peer's
//! deadline is at most `max_phase_one` after it started, so older branches are past it. A
//! peer that is not alive (no process holds its identity lock, `log::live_identities`) gets
//! no grace: its branches are fenced at once, so a coordinator that is down holds its rows
//! for one round, not for the grace age. A peer's logged commits are finished once a moment
//! old.

mod apply;
mod plan;

use std::time::Duration;

use sqlx::PgPool;

pub use apply::{Applied, ItemResult};
pub use plan::{Action, Item, LogState, Plan};

use crate::{inflight::InFlight, participants::Participants, telemetry, App};

/// The inputs of a round.
pub struct Recovery<'a> {
    /// Only gids of this coordinator; `None` for every coordinator.
    pub scope: Option<&'a str>,
    /// The live coordinator running this round; `None` outside the coordinator (the CLI).
    pub own: Option<Own<'a>>,
    pub log: &'a PgPool,
    pub participants: &'a Participants,
    /// Branches without a decision that are not `own`'s are left alone until this old.
    pub grace: Duration,
}

/// The coordinator running a round: its identity (whose lock it holds) and its running
/// transactions.
#[derive(Clone, Copy)]
pub struct Own<'a> {
    pub id: &'a str,
    pub in_flight: &'a InFlight,
}

/// Who an abort record written by the operators' CLI names.
pub const CLI_IDENTITY: &str = "wdm-recovery";

/// Runs one round for the live coordinator, unless the operators' CLI holds the recovery lock.
pub async fn round(app: &App) -> Result<Option<Applied>, sqlx::Error> {
    service_kit::telemetry::record_pool(app.log.pool(), "coordinator");
    for participant in app.participants.iter() {
        service_kit::telemetry::record_pool(&participant.pool, &participant.name);
    }
    let mut guard = app.log.pool().begin().await?;
    if !try_lock(&mut guard, Some(&app.config.id)).await? {
        metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => "skipped").increment(1);
        return Ok(None);
    }
    let recovery = Recovery {
        scope: None,
        own: Some(Own {
            id: &app.config.id,
            in_flight: &app.inflight,
        }),
        log: app.log.pool(),
        participants: &app.participants,
        grace: app.config.peer_grace(),
    };
    let plan = recovery.plan().await?;
    publish_gauges(&plan, &app.participants, &app.config.id);
    let applied = recovery.apply(&plan).await;
    guard.rollback().await?;
    let result = if applied.errors.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics::counter!(telemetry::RECOVERY_ROUNDS, "result" => result).increment(1);
    if applied.committed + applied.rolled_back + applied.hazards > 0 {
        tracing::info!(?applied, "recovery round");
    }
    Ok(Some(applied))
}

/// The recovery lock of one coordinator (`Some(id)`) or of the operators' CLI (`None`): a
/// transaction-level advisory lock, so it is released with the transaction even if its holder
/// is cancelled or dies. It only keeps two rounds of one coordinator from doing the same work
/// twice: every action of a round is safe beside another round's (a repeated commit or
/// rollback answers through the marker, a fence through the log's key), so coordinators do
/// not wait for each other, and a stopped one holding its lock stops nobody else.
pub async fn try_lock(tx: &mut sqlx::PgConnection, id: Option<&str>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock(hashtext('wdm-recovery'), hashtext($1))")
        .bind(id.unwrap_or(CLI_IDENTITY))
        .fetch_one(tx)
        .await
}

/// The gauges count this coordinator's own branches, so that the coordinators' series add up.
fn publish_gauges(plan: &Plan, participants: &Participants, own: &str) {
    let own_items = || plan.items.iter().filter(|i| i.parsed.coordinator() == own);
    for participant in participants.iter() {
        let count = own_items()
            .filter(|i| i.participant == participant.name && i.prepared_at.is_some())
            .count();
        metrics::gauge!(telemetry::IN_DOUBT, "participant" => participant.name.clone())
            .set(count as f64);
    }
    let oldest = own_items()
        .filter_map(|i| i.age_seconds)
        .fold(0.0_f64, f64::max);
    metrics::gauge!(telemetry::IN_DOUBT_OLDEST).set(oldest);
}
