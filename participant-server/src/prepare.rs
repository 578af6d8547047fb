//! Phase one of a branch: `POST /_2pc/prepare`.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use sqlx::PgPool;
use twopc::{
    branch::{transient_refusal, Branch},
    wire::{PrepareRequest, Refusal, Vote},
    Deadline, Gid, GidError,
};

use crate::{BranchWork, VOTES};

/// Why a prepare request got no vote.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Gid(#[from] GidError),
    #[error("invalid work: {0}")]
    Work(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for PrepareError {
    fn into_response(self) -> Response {
        // The coordinator counts a failed prepare as a no vote and aborts.
        let database = match &self {
            PrepareError::Database(source) => Some(source),
            _ => None,
        };
        service_kit::http::error_reply(&self, database)
    }
}

/// `POST /_2pc/prepare` for branch work `P`, on the participant's database: the vote, or why
/// there is none (400 for a request that is not a branch, 500 for a database that failed).
pub async fn prepare<P: BranchWork>(
    State(pool): State<PgPool>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>, PrepareError> {
    let gid = Gid::parse(&request.gid)?;
    let (works, batch) = parse_batch::<P>(request.work)?;
    let sql = P::sql(&gid, &works)
        .ok_or_else(|| PrepareError::Work("a value cannot be written as SQL text".to_owned()))?;
    let vote = match vote(&pool, &gid, request.deadline, request.repeat, &sql).await {
        // A lone checkout's refusal is about no member of a batch.
        Ok(Vote::No(refusal)) if !batch => Vote::No(Refusal {
            member: None,
            ..refusal
        }),
        Ok(vote) => vote,
        // The branch is rolled back by now (dropped); a lock wait that ran out is a transient
        // no, anything else an error (noted, should it say a connection broke, by its reply).
        Err(error) => match transient_refusal(&error) {
            Some(refusal) => Vote::No(refusal),
            None => return Err(error.into()),
        },
    };
    let label = match &vote {
        Vote::Yes => "yes",
        Vote::No(_) => "no",
    };
    metrics::counter!(VOTES, "participant" => P::NAME, "vote" => label).increment(1);
    Ok(Json(vote))
}

/// A work is one member's, or a JSON array of members' (a batch, `true`); each is read and
/// checked.
fn parse_batch<P: BranchWork>(
    work: serde_json::Value,
) -> Result<(Vec<P::Work>, bool), PrepareError> {
    match work {
        serde_json::Value::Array(members) if members.is_empty() => Err(PrepareError::Work(
            "a batch needs at least one member".to_owned(),
        )),
        serde_json::Value::Array(members) => members
            .into_iter()
            .enumerate()
            .map(|(index, work)| {
                P::parse_work(work)
                    .map_err(|error| PrepareError::Work(format!("member {index}: {error}")))
            })
            .collect::<Result<_, _>>()
            .map(|works| (works, true)),
        work => P::parse_work(work)
            .map(|work| (vec![work], false))
            .map_err(PrepareError::Work),
    }
}

/// The branch in one round trip; a repeat first looks whether it is prepared already.
#[tracing::instrument(skip(pool, sql), fields(%gid))]
async fn vote(
    pool: &PgPool,
    gid: &Gid,
    deadline: Deadline,
    repeat: bool,
    sql: &str,
) -> sqlx::Result<Vote> {
    if !repeat {
        return Branch::run_in_one_trip(pool, gid, deadline, sql).await;
    }
    match Branch::begin(pool, gid, deadline, repeat).await? {
        Some(branch) => branch.run(sql).await,
        // Already prepared: a retry whose first answer was lost.
        None => Ok(Vote::Yes),
    }
}
