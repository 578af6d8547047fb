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

use crate::{Participant, VOTES};

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

pub(crate) async fn prepare<P: Participant>(
    State(pool): State<PgPool>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>, PrepareError> {
    let gid = Gid::parse(&request.gid)?;
    let works = parse_batch::<P>(request.work)?;
    let vote = match vote::<P>(&pool, &gid, request.deadline, request.repeat, &works).await {
        Ok(vote) => vote,
        // The branch is rolled back by now (dropped); a lock wait that ran out is a transient
        // no, anything else an error.
        Err(error) => {
            service_kit::db::note_broken(&error);
            match transient_refusal(&error) {
                Some(refusal) => Vote::No(refusal),
                None => return Err(error.into()),
            }
        }
    };
    let label = match &vote {
        Vote::Yes => "yes",
        Vote::No(_) => "no",
    };
    metrics::counter!(VOTES, "participant" => P::NAME, "vote" => label).increment(1);
    Ok(Json(vote))
}

/// A work is one member's, or a JSON array of members' (a batch); each is read and checked.
fn parse_batch<P: Participant>(work: serde_json::Value) -> Result<Batch<P::Work>, PrepareError> {
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
            .map(Batch::Members),
        work => P::parse_work(work)
            .map(Batch::One)
            .map_err(PrepareError::Work),
    }
}

/// The work of one branch: a lone member's, or a batch's.
enum Batch<W> {
    One(W),
    Members(Vec<W>),
}

#[tracing::instrument(skip(pool, works), fields(participant = P::NAME, %gid))]
async fn vote<P: Participant>(
    pool: &PgPool,
    gid: &Gid,
    deadline: Deadline,
    repeat: bool,
    works: &Batch<P::Work>,
) -> sqlx::Result<Vote> {
    // A lone member's first send travels in one round trip; a repeat must first look whether
    // the branch is prepared already, and a batch's members are locked together by
    // `apply_batch`.
    let lone = match works {
        Batch::One(work) => Some((work, false)),
        Batch::Members(members) if members.len() == 1 => Some((&members[0], true)),
        Batch::Members(_) => None,
    };
    if let Some((work, member)) = lone.filter(|_| !repeat) {
        if let Some(sql) = P::one_trip(work) {
            return Ok(
                match Branch::run_in_one_trip(pool, gid, deadline, &sql).await? {
                    Vote::No(refusal) if member => Vote::No(refusal.of_member(0)),
                    vote => vote,
                },
            );
        }
    }
    let Some(mut branch) = Branch::begin(pool, gid, deadline, repeat).await? else {
        // Already prepared: a retry whose first answer was lost.
        return Ok(Vote::Yes);
    };
    match apply::<P>(branch.tx(), works).await {
        Ok(Ok(())) => branch.prepare().await,
        Ok(Err(refusal)) => branch.refuse(refusal).await,
        Err(error) => Err(branch.fail(error).await),
    }
}

/// Does the branch's work: a lone member's, or a batch's all or none, the first refusal
/// naming its member.
async fn apply<P: Participant>(
    conn: &mut sqlx::PgConnection,
    works: &Batch<P::Work>,
) -> sqlx::Result<Result<(), Refusal>> {
    let refused = match works {
        Batch::One(work) => return P::apply(conn, work).await,
        Batch::Members(members) if members.len() == 1 => P::apply(conn, &members[0])
            .await?
            .map_err(|refusal| (0, refusal)),
        Batch::Members(members) => P::apply_batch(conn, members).await?,
    };
    Ok(refused.map_err(|(index, refusal)| refusal.of_member(index)))
}
