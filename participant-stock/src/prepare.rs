//! Phase one of a checkout's branch in the stock database: `POST /_2pc/prepare`.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use axum::{extract::State, Json};
use serde::Deserialize;
use service_kit::parse_id;
use sqlx::{PgConnection, PgPool};
use twopc::{
    branch::{timeout_refusal, Branch},
    wire::{PrepareRequest, Refusal, Vote},
    Gid,
};

use crate::{
    db,
    error::{Error, Result},
    AppState, PARTICIPANT, VOTES,
};

/// The stock branch's work: take `quantity` of each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockWork {
    pub items: Vec<Line>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    pub item_id: String,
    pub quantity: i64,
}

impl StockWork {
    /// Reads and checks the work: ids valid and distinct (the order service sums quantities of
    /// one item), quantities at least 1.
    pub fn from_json(work: serde_json::Value) -> Result<Self> {
        let work: Self =
            serde_json::from_value(work).map_err(|error| Error::Work(error.to_string()))?;
        let mut seen = HashSet::with_capacity(work.items.len());
        for line in &work.items {
            parse_id("item_id", &line.item_id)?;
            if line.quantity < 1 {
                return Err(Error::Work(format!(
                    "quantity of item {} must be at least 1, got {}",
                    line.item_id, line.quantity
                )));
            }
            if !seen.insert(line.item_id.as_str()) {
                return Err(Error::Work(format!("item {} appears twice", line.item_id)));
            }
        }
        Ok(work)
    }
}

pub async fn prepare(
    State(state): State<AppState>,
    Json(request): Json<PrepareRequest>,
) -> Result<Json<Vote>> {
    let gid = Gid::parse(&request.gid)?;
    let work = StockWork::from_json(request.work)?;
    let lock_timeout = Duration::from_millis(request.lock_timeout_ms);
    let vote = match vote(&state.pool, &gid, lock_timeout, &work).await {
        Ok(vote) => vote,
        Err(error) => match timeout_refusal(&error) {
            Some(refusal) => Vote::No(refusal),
            None => return Err(error.into()),
        },
    };
    let label = match &vote {
        Vote::Yes => "yes",
        Vote::No(_) => "no",
    };
    metrics::counter!(VOTES, "participant" => PARTICIPANT, "vote" => label).increment(1);
    Ok(Json(vote))
}

#[tracing::instrument(skip(pool, work), fields(%gid))]
async fn vote(
    pool: &PgPool,
    gid: &Gid,
    lock_timeout: Duration,
    work: &StockWork,
) -> sqlx::Result<Vote> {
    let Some(mut branch) = Branch::begin(pool, gid, lock_timeout).await? else {
        return Ok(Vote::Yes);
    };
    match reserve(branch.tx(), work).await? {
        Ok(()) => branch.prepare().await,
        Err(refusal) => branch.refuse(refusal).await,
    }
}

/// Takes the work's quantities, or says why not.
async fn reserve(
    conn: &mut PgConnection,
    work: &StockWork,
) -> sqlx::Result<std::result::Result<(), Refusal>> {
    let ids: Vec<String> = work.items.iter().map(|l| l.item_id.clone()).collect();
    let quantities: Vec<i64> = work.items.iter().map(|l| l.quantity).collect();
    // The database's collation, not Rust's byte order, decides the lock order, so the rows
    // are matched to the lines by id rather than by position.
    let stock: HashMap<String, i64> = db::lock_items(conn, &ids).await?.into_iter().collect();
    for line in &work.items {
        let Some(&left) = stock.get(&line.item_id) else {
            return Ok(Err(Refusal::business(
                "unknown_item",
                format!("item {} does not exist", line.item_id),
            )));
        };
        if left < line.quantity {
            return Ok(Err(Refusal::business(
                "out_of_stock",
                format!(
                    "item {} has {left} left, {} wanted",
                    line.item_id, line.quantity
                ),
            )));
        }
    }
    db::subtract_items(conn, &ids, &quantities).await?;
    Ok(Ok(()))
}
