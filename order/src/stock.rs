//! What the order service asks the stock service (on the internal network, never through the
//! public gateway): an item's price for `addItem`, and an item's stock before a checkout that
//! would otherwise run a whole transaction only to be refused for it.
//!
//! **Refusing a sold-out checkout without a transaction.** A checkout refused "out of stock"
//! has prepared its order and payment branches, asked stock, and rolled both back: a whole
//! two-phase commit that changes nothing. In the course's consistency scenario nine checkouts
//! in ten are such refusals once the hot item is sold out, and they cost as much as sales. So
//! an instance remembers the items of checkouts refused out of stock ([`SoldOut`], for
//! [`MEMORY`]), and a later checkout of one of them first looks at the item's committed stock:
//! below the quantity, the checkout is refused at once (400, its claim released, nothing
//! prepared, nothing charged).
//!
//! The look is only ever a reason to refuse, never to go ahead, and the refusal is true:
//! committed stock bounds what a checkout can take from above (another checkout's prepared
//! decrement is not in it yet, and one that rolls back never was), so "below the quantity"
//! holds at the moment of the look. The look comes after the order is claimed: before it, the
//! retry of a checkout that took the last unit could be told "out of stock" for an order that
//! is paid. A look that fails, or finds enough, lets the transaction decide, and an item found
//! with enough is forgotten.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{error::Error, telemetry, State};

/// An item as `GET /stock/find` shows it.
#[derive(Debug, Deserialize)]
pub struct Item {
    pub stock: i64,
    pub price: i64,
}

/// Asks the stock service for an item; `Ok(None)` if it does not exist.
pub async fn find(state: &State, item_id: &str, timeout: Duration) -> Result<Option<Item>, Error> {
    let mut url = state.config.stock_url.clone();
    url.path_segments_mut()
        .map_err(|()| Error::Internal("stock URL cannot be a base".into()))?
        .pop_if_empty()
        .extend(["stock", "find", item_id]);
    let response = state
        .http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(Error::StockUnavailable)?;
    if response.status().is_client_error() {
        return Ok(None);
    }
    let response = response
        .error_for_status()
        .map_err(Error::StockUnavailable)?;
    let item = response.json().await.map_err(Error::StockUnavailable)?;
    Ok(Some(item))
}

/// How long an item refused out of stock is looked at before checkouts of it.
pub const MEMORY: Duration = Duration::from_secs(30);

/// Items remembered at most; past it, only the ones already remembered are renewed.
const REMEMBERED_AT_MOST: usize = 10_000;

/// Bound on one look: the stock service answers it from one indexed read. A look that takes
/// longer is abandoned and the transaction decides.
const LOOK_TIMEOUT: Duration = Duration::from_millis(500);

/// The items this instance saw refused out of stock lately, with when.
#[derive(Default)]
pub struct SoldOut {
    seen: Mutex<HashMap<String, Instant>>,
}

impl SoldOut {
    /// Remembers `items` as refused now.
    pub fn note<'a>(&self, items: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REMEMBERED_AT_MOST {
            seen.retain(|_, at| now.duration_since(*at) < MEMORY);
        }
        for item in items {
            if seen.len() < REMEMBERED_AT_MOST || seen.contains_key(item) {
                seen.insert(item.to_owned(), now);
            }
        }
    }

    /// Forgets `item`: it was found with enough stock.
    pub fn forget(&self, item: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(item);
    }

    /// The lines whose item was refused out of stock within [`MEMORY`].
    pub fn suspects<'a>(&self, lines: &'a [(String, i64)]) -> Vec<&'a (String, i64)> {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|(item, _)| {
                seen.get(item)
                    .is_some_and(|at| now.duration_since(*at) < MEMORY)
            })
            .collect()
    }
}

/// Before a checkout of `lines` (one per item, quantities summed): looks at the stock of each
/// item seen sold out lately, and returns the refusal if one has less than the quantity.
pub async fn look(state: &State, lines: &[(String, i64)]) -> Option<String> {
    for (item_id, quantity) in state.sold_out.suspects(lines) {
        let result = match find(state, item_id, LOOK_TIMEOUT).await {
            Ok(Some(item)) if item.stock < *quantity => {
                metrics::counter!(telemetry::STOCK_LOOKS, "result" => "short").increment(1);
                state.sold_out.note([item_id.as_str()]);
                return Some(format!(
                    "item {item_id} has {} left, {quantity} wanted",
                    item.stock
                ));
            }
            Ok(Some(_)) => {
                state.sold_out.forget(item_id);
                "enough"
            }
            // Not the look's to decide: the transaction refuses an unknown item itself.
            Ok(None) => "enough",
            Err(error) => {
                tracing::debug!(%error, item_id, "stock look failed; the transaction decides");
                "failed"
            }
        };
        metrics::counter!(telemetry::STOCK_LOOKS, "result" => result).increment(1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(items: &[&str]) -> Vec<(String, i64)> {
        items.iter().map(|item| ((*item).to_owned(), 1)).collect()
    }

    #[test]
    fn only_items_refused_lately_are_looked_at_and_one_found_with_enough_is_forgotten() {
        let sold_out = SoldOut::default();
        let order = lines(&["a", "b"]);
        assert!(sold_out.suspects(&order).is_empty());
        sold_out.note(["b", "c"]);
        assert_eq!(sold_out.suspects(&order), vec![&("b".to_owned(), 1)]);
        sold_out.forget("b");
        assert!(sold_out.suspects(&order).is_empty());
    }

    #[test]
    fn a_refusal_is_remembered_for_a_while_only() {
        let sold_out = SoldOut::default();
        let order = lines(&["a"]);
        sold_out.note(["a"]);
        sold_out
            .seen
            .lock()
            .unwrap()
            .insert("a".to_owned(), Instant::now() - MEMORY);
        assert!(sold_out.suspects(&order).is_empty());
    }

    #[test]
    fn the_memory_is_bounded_and_makes_room_from_expired_items() {
        let sold_out = SoldOut::default();
        let many: Vec<String> = (0..REMEMBERED_AT_MOST + 10)
            .map(|i| i.to_string())
            .collect();
        sold_out.note(many.iter().map(String::as_str));
        assert_eq!(sold_out.seen.lock().unwrap().len(), REMEMBERED_AT_MOST);
        for at in sold_out.seen.lock().unwrap().values_mut() {
            *at -= MEMORY;
        }
        sold_out.note(["new"]);
        assert_eq!(sold_out.seen.lock().unwrap().len(), 1);
        assert_eq!(sold_out.suspects(&lines(&["new"])).len(), 1);
    }
}
