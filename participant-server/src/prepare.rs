//! Phase one of a branch: `POST /_2pc/prepare`.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use sqlx::PgPool;
use twopc::{
    branch::{transient_refusal, Branch},
    wire::{PrepareRequest, Vote},
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
        let status = match &self {
            PrepareError::Gid(_) | PrepareError::Work(_) => StatusCode::BAD_REQUEST,
            // The coordinator counts a failed prepare as a no vote and aborts.
            PrepareError::Database(_) => {
                return service_kit::http::internal_error(&self);
            }
        };
        service_kit::http::client_error(status, self.to_string())
    }
}

pub(crate) async fn prepare<P: Participant>(
    State(pool): State<PgPool>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>, PrepareError> {
    let gid = Gid::parse(&request.gid)?;
    let work = P::parse_work(request.work).map_err(PrepareError::Work)?;
    let vote = match vote::<P>(&pool, &gid, request.deadline, request.repeat, &work).await {
        Ok(vote) => vote,
        // The branch is rolled back by now (dropped); a lock wait that ran out is a transient
        // no, anything else an error.
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

#[tracing::instrument(skip(pool, work), fields(participant = P::NAME, %gid))]
async fn vote<P: Participant>(
    pool: &PgPool,
    gid: &Gid,
    deadline: Deadline,
    repeat: bool,
    work: &P::Work,
) -> sqlx::Result<Vote> {
    let Some(mut branch) = Branch::begin(pool, gid, deadline, repeat).await? else {
        // Already prepared: a retry whose first answer was lost.
        return Ok(Vote::Yes);
    };
    match P::apply(branch.tx(), work).await {
        Ok(Ok(())) => branch.prepare().await,
        Ok(Err(refusal)) => branch.refuse(refusal).await,
        Err(error) => Err(branch.fail(error).await),
    }
}
