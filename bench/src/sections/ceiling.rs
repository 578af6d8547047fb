//! `ceiling`: what the same checkouts cost as ONE local transaction in ONE database.
//!
//! A database `ceiling` on the stock service's PostgreSQL instance (same machine, same
//! durability settings) gets the three services' tables, made by their own migrations, one
//! schema per service (`stock.items`, `payment.users`, `orders.orders`), the same users
//! and items as `batch_init` makes, and a copy of the batch-loaded orders from the order
//! database, so each transaction touches the rows its distributed checkout touched. Then,
//! at each concurrency of the `checkout` section and over the same order ids, every order is
//! checked out once: lock and read the order, check it is unpaid, subtract stock (items in
//! sorted order, as the stock participant locks them), subtract credit, set paid, commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use launcher::Service;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

use super::{exhausted_note, Bench, EachOnce, ITEM_PRICE, PLENTY};
use crate::load::{self, Load, Outcome};
use crate::report::{Report, Row};
use crate::sections::Section;

const DATABASE: &str = "ceiling";

/// Each service's tables, created by its own migrations (read from the source tree the bench
/// was built from) in a schema of its own: (schema, directory under `migrations/`).
const SERVICES: [(&str, &str); 3] = [
    ("stock", "stock"),
    ("payment", "payment"),
    ("orders", "order"),
];

pub async fn run(bench: &mut Bench, report: &mut Report) -> anyhow::Result<()> {
    bench.ensure_orders().await?;
    let instance = bench
        .system
        .postgres(Service::Stock)
        .context("the system has no stock PostgreSQL instance")?;
    instance.create_database(DATABASE).await?;
    let url = instance.url(DATABASE);

    let started = Instant::now();
    load_tables(bench, &url).await?;
    eprintln!(
        "ceiling tables loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for (clients, ids) in bench.scale.checkout_runs() {
        let pool = connect_pool(&url, clients).await?;
        let orders = EachOnce::new(&ids);
        let load = Load {
            label: format!("ceiling x{clients}"),
            clients,
            duration: Some(bench.scale.duration),
        };
        let stats = load::run(&load, move || {
            let pool = pool.clone();
            let id = orders.take();
            async move {
                Some(match checkout(&pool, &id?.to_string()).await {
                    Ok(true) => Outcome::Ok,
                    // What the API would answer for an unknown order or missing stock/credit.
                    Ok(false) => Outcome::Rejected(400),
                    Err(error) => {
                        report_first_error(&error);
                        Outcome::Failed
                    }
                })
            }
        })
        .await?;
        report.add(Row::load(
            Section::Ceiling,
            format!(
                "1 local tx in 1 database, orders {}..{}",
                ids.start, ids.end
            ),
            clients,
            &stats,
        ));
        if let Some(note) = exhausted_note(&stats, &ids) {
            report.note(format!("ceiling x{clients}: {note}"));
        }
        let checkout = bench.checkout.get(&clients).and_then(|row| row.per_second);
        let ratio = match checkout {
            Some(checkout) if stats.per_second() > 0.0 => format!(
                "{:.3} ({checkout:.0} checkouts/s vs {:.0} tx/s)",
                checkout / stats.per_second(),
                stats.per_second()
            ),
            _ => "n/a (run the checkout section in the same run)".to_owned(),
        };
        report.note(format!(
            "ratio checkout/ceiling at {clients} clients: {ratio}"
        ));
    }
    Ok(())
}

/// Creates the tables and fills them like the services' `batch_init` left theirs.
async fn load_tables(bench: &Bench, url: &str) -> anyhow::Result<()> {
    let rows = bench.scale.rows;
    let ids: Vec<String> = (0..rows).map(|id| id.to_string()).collect();

    let mut orders_db = PgConnection::connect(&bench.database_url(Service::Order))
        .await
        .context("connecting to the order database")?;
    let orders: Vec<(String, String, String, i64)> = sqlx::query_as(
        "select id, user_id, items::text, total_cost from orders where id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut orders_db)
    .await
    .context("reading the batch-loaded orders")?;
    let _ = orders_db.close().await;
    anyhow::ensure!(
        orders.len() == ids.len(),
        "the order database holds {} of the {rows} batch-loaded orders",
        orders.len()
    );

    let mut db = PgConnection::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    create_schemas(&mut db).await?;
    sqlx::query(
        "insert into stock.items (id, stock, price) select g::text, $2, $3 from generate_series(0, $1 - 1) g",
    )
    .bind(rows)
    .bind(PLENTY)
    .bind(ITEM_PRICE)
    .execute(&mut db)
    .await
    .context("loading items")?;
    sqlx::query(
        "insert into payment.users (id, credit) select g::text, $2 from generate_series(0, $1 - 1) g",
    )
    .bind(rows)
    .bind(PLENTY)
    .execute(&mut db)
    .await
    .context("loading users")?;
    let mut columns: (Vec<String>, Vec<String>, Vec<String>, Vec<i64>) = Default::default();
    for (id, user, items, total) in orders {
        columns.0.push(id);
        columns.1.push(user);
        columns.2.push(items);
        columns.3.push(total);
    }
    sqlx::query(
        "insert into orders.orders (id, user_id, paid, items, total_cost) \
         select id, user_id, false, items::jsonb, total \
         from unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) as o(id, user_id, items, total)",
    )
    .bind(&columns.0)
    .bind(&columns.1)
    .bind(&columns.2)
    .bind(&columns.3)
    .execute(&mut db)
    .await
    .context("copying the orders")?;
    sqlx::raw_sql("analyze stock.items, payment.users, orders.orders")
        .execute(&mut db)
        .await
        .context("analyze")?;
    let _ = db.close().await;
    Ok(())
}

/// One schema per service, each made by that service's migrations in file-name order.
async fn create_schemas(db: &mut PgConnection) -> anyhow::Result<()> {
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    for (schema, dir) in SERVICES {
        let dir = migrations.join(dir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        files.retain(|file| file.extension().is_some_and(|ext| ext == "sql"));
        files.sort();
        let create = format!(
            "drop schema if exists {schema} cascade; create schema {schema}; \
             set search_path to {schema}"
        );
        sqlx::raw_sql(&create)
            .execute(&mut *db)
            .await
            .with_context(|| format!("creating schema {schema}"))?;
        for file in files {
            let sql = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            sqlx::raw_sql(&sql)
                .execute(&mut *db)
                .await
                .with_context(|| format!("running {} in schema {schema}", file.display()))?;
        }
    }
    sqlx::raw_sql("set search_path to public")
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// A pool of exactly `clients` connections, all opened before the clock starts.
async fn connect_pool(url: &str, clients: usize) -> anyhow::Result<PgPool> {
    let size = u32::try_from(clients).context("too many clients")?;
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await
        .with_context(|| format!("connecting a pool to {url}"))?;
    let mut held = Vec::with_capacity(clients);
    for _ in 0..clients {
        held.push(
            pool.acquire()
                .await
                .context("opening the pool's connections")?,
        );
    }
    drop(held);
    Ok(pool)
}

/// One checkout as one local transaction; `false` when it cannot be paid (nothing changed).
async fn checkout(pool: &PgPool, order_id: &str) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let order: Option<(String, bool, String, i64)> = sqlx::query_as(
        "select user_id, paid, items::text, total_cost from orders.orders where id = $1 for update",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    // Dropping `tx` rolls it back.
    let Some((user_id, paid, items, total_cost)) = order else {
        return Ok(false);
    };
    if paid {
        return Ok(true);
    }
    let lines: Vec<(String, i64)> = serde_json::from_str(&items).context("order items")?;
    let mut quantities: BTreeMap<String, i64> = BTreeMap::new();
    for (item, quantity) in lines {
        *quantities.entry(item).or_default() += quantity;
    }
    for (item, quantity) in &quantities {
        let done =
            sqlx::query("update stock.items set stock = stock - $2 where id = $1 and stock >= $2")
                .bind(item)
                .bind(quantity)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
    }
    let done =
        sqlx::query("update payment.users set credit = credit - $2 where id = $1 and credit >= $2")
            .bind(&user_id)
            .bind(total_cost)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("update orders.orders set paid = true where id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Database errors are counted as failed; the first one is shown so that it can be fixed.
fn report_first_error(error: &anyhow::Error) {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if !REPORTED.swap(true, Ordering::Relaxed) {
        eprintln!("ceiling: first failed transaction: {error:#}");
    }
}
