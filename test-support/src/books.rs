//! The books' invariants: in a system where every order costs what its items cost, the stock
//! sold, the credit spent and the paid orders' totals are one number, every checkout answered
//! 200 is paid and every one answered 4xx is not. The system tests assert them after every
//! fault; the benchmark prints the consistency scenario's figures from the same reads.

use std::future::Future;

use launcher::system::{Service, System};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sqlx::{Connection, PgConnection};

use crate::{Client, CONSISTENCY_STOCK, CONSISTENCY_USERS};

/// Where the books are read: a [`System`] of processes, or containers (`tests/compose.rs`).
pub trait DatabaseReader {
    /// The number `sql` returns on `service`'s database (NULL as 0).
    fn scalar_i64(&self, service: Service, sql: &str) -> impl Future<Output = i64>;
}

impl DatabaseReader for System {
    async fn scalar_i64(&self, service: Service, sql: &str) -> i64 {
        let mut conn = PgConnection::connect(&self.database_url(service))
            .await
            .unwrap_or_else(|error| panic!("connect to {} database: {error}", service.name()));
        sqlx::query_scalar::<_, Option<i64>>(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
            .unwrap_or(0)
    }
}

/// The money and goods balance of a system: stock sold = credit spent = sum of the paid
/// orders' totals.
pub struct Ledger {
    pub stock_sold: i64,
    pub credit_spent: i64,
    pub paid_total: i64,
    pub paid_orders: i64,
}

/// Reads the ledger given the starting totals of stock and credit.
pub async fn ledger(
    system: &impl DatabaseReader,
    initial_stock: i64,
    initial_credit: i64,
) -> Ledger {
    let stock = system
        .scalar_i64(Service::Stock, "select sum(stock)::bigint from items")
        .await;
    let credit = system
        .scalar_i64(Service::Payment, "select sum(credit)::bigint from users")
        .await;
    let paid_total = system
        .scalar_i64(
            Service::Order,
            "select sum(total_cost)::bigint from orders where paid",
        )
        .await;
    let paid_orders = system
        .scalar_i64(Service::Order, "select count(*) from orders where paid")
        .await;
    Ledger {
        stock_sold: initial_stock - stock,
        credit_spent: initial_credit - credit,
        paid_total,
        paid_orders,
    }
}

/// The credit left to the consistency scenario's users (0..999), whatever other users the
/// system holds.
pub async fn consistency_credit_left(system: &impl DatabaseReader) -> i64 {
    let sql = format!(
        "select sum(credit)::bigint from users \
         where id in (select g::text from generate_series(0, {CONSISTENCY_USERS} - 1) as g)"
    );
    system.scalar_i64(Service::Payment, &sql).await
}

/// The orders already paid when a scenario starts on a system that ran others before.
#[derive(Debug, Default, Clone, Copy)]
pub struct Paid {
    pub orders: i64,
    pub total: i64,
}

impl Paid {
    pub async fn read(system: &impl DatabaseReader) -> Self {
        let books = ledger(system, 0, 0).await;
        Self {
            orders: books.paid_orders,
            total: books.paid_total,
        }
    }
}

#[derive(Deserialize)]
struct Order {
    paid: bool,
}

/// Every 200 applied, every 4xx not, and the ledger balanced; no 5xx.
pub async fn assert_checkouts_exact(
    system: &impl DatabaseReader,
    client: &Client,
    results: &[(String, StatusCode)],
    initial_stock: i64,
    initial_credit: i64,
) {
    let nothing_paid = Paid::default();
    assert_checkouts_exact_since(
        system,
        client,
        results,
        initial_stock,
        initial_credit,
        &nothing_paid,
    )
    .await;
}

/// [`assert_checkouts_exact`] for the consistency scenario's checkouts on a fresh system.
pub async fn assert_consistency_exact(
    system: &impl DatabaseReader,
    client: &Client,
    results: &[(String, StatusCode)],
) {
    assert_checkouts_exact(
        system,
        client,
        results,
        CONSISTENCY_STOCK,
        CONSISTENCY_USERS,
    )
    .await;
}

/// [`assert_checkouts_exact`] for a scenario that started with `earlier` already paid; stock
/// and credit were reset to `initial_stock` and `initial_credit` when it started.
pub async fn assert_checkouts_exact_since(
    system: &impl DatabaseReader,
    client: &Client,
    results: &[(String, StatusCode)],
    initial_stock: i64,
    initial_credit: i64,
    earlier: &Paid,
) {
    let server_errors: Vec<_> = results
        .iter()
        .filter(|(_, s)| s.is_server_error())
        .collect();
    assert!(server_errors.is_empty(), "5xx replies: {server_errors:?}");
    for (order, status) in results {
        let path = format!("/orders/find/{order}");
        let paid = client
            .must_succeed_json::<Order>(Method::GET, &path)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
            .paid;
        assert_eq!(
            paid,
            status.is_success(),
            "order {order}: reply {status} but paid = {paid}"
        );
    }
    let ledger = ledger(system, initial_stock, initial_credit).await;
    let paid_total = ledger.paid_total - earlier.total;
    let successes = results.iter().filter(|(_, s)| s.is_success()).count() as i64;
    assert_eq!(
        ledger.paid_orders - earlier.orders,
        successes,
        "paid orders vs 200 replies"
    );
    assert_eq!(ledger.stock_sold, paid_total, "stock sold vs paid totals");
    assert_eq!(
        ledger.credit_spent, paid_total,
        "credit spent vs paid totals"
    );
}
