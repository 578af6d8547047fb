//! Connecting to a service's own PostgreSQL database.

use std::time::Duration;

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool,
};

use crate::tasks::Tasks;

/// How long start-up waits for a database that is still coming up (the launcher starts the
/// databases and the services at the same time, and restarts either after a crash).
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(60);

/// A pooled connection idle for less than this is handed out without a test, unless a
/// connection of this process broke since it was last used (see [`note_broken`]).
///
/// sqlx tests every connection as it goes back to the pool (a round trip, unconditionally),
/// and by default once more as it comes out. On the checkout's paths a connection is back in
/// the pool for well under a millisecond between uses, so the second test only repeats the
/// first: it cost a round trip on every statement of a checkout, a dozen per checkout. A
/// connection that sat idle longer (the server may have restarted or failed over meanwhile)
/// is still tested. One broken all the same fails its statement like a connection that
/// breaks mid-use, which every caller handles (a vote fails and the checkout runs again,
/// phase two retries, the order claim retries, a read runs once more: [`read`]), and that
/// failure has every connection released before it tested on its next use.
pub const TEST_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The options of every pool of the services: at most `max_connections`, a wait of at most
/// `acquire_timeout` for one, none kept open when idle, and a connection tested before use
/// only when it was last proven alive (released, which sqlx tests) [`TEST_AFTER_IDLE`] ago or
/// more, or before the last broken connection this process saw.
pub fn pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= TEST_AFTER_IDLE.min(broken::since_last()) {
                    // An error closes the connection and the pool takes or opens another.
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Notes `error` when it says a connection broke (see [`is_broken`]): from now on, every
/// pooled connection of this process last used before this moment is tested before its next
/// use, as the server behind it may have restarted or failed over. Returns whether it did.
///
/// Whoever sees a database error passes it here; the services' error replies do
/// ([`crate::http::database_error`]), as do the participants' votes and the pool watch.
pub fn note_broken(error: &sqlx::Error) -> bool {
    let broken = is_broken(error);
    if broken {
        broken::mark();
    }
    broken
}

/// True when `error` says the connection itself failed: it broke or was refused, or the
/// server ended the session (shutting down, starting up, terminated by an administrator).
/// Unlike [`is_unavailable`], not a pool that found no connection in time.
pub fn is_broken(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: shutting down or starting up.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Runs `statement` (a read, or any statement safe to run twice), and once more when it
/// failed on a broken connection: the failure is noted ([`note_broken`]), so the second run
/// gets a connection tested or opened after it. A connection that broke while idle in the
/// pool (its server restarted within [`TEST_AFTER_IDLE`]) thus never fails a read.
pub async fn read<T, F, Fut>(mut statement: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    match statement().await {
        Err(error) if note_broken(&error) => {
            tracing::debug!(%error, "a pooled connection was broken; reading once more");
            statement().await
        }
        done => done,
    }
}

/// When this process last saw a broken connection, as nanoseconds since the first look.
mod broken {
    use std::{
        sync::{
            atomic::{AtomicU64, Ordering},
            OnceLock,
        },
        time::{Duration, Instant},
    };

    static EPOCH: OnceLock<Instant> = OnceLock::new();
    /// 0: none seen yet.
    static LAST: AtomicU64 = AtomicU64::new(0);

    fn now() -> u64 {
        // At least 1, so that a mark is never taken for "none".
        (EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64).max(1)
    }

    pub(super) fn mark() {
        LAST.fetch_max(now(), Ordering::Relaxed);
    }

    /// How long ago the last broken connection was seen; [`Duration::MAX`] if none was.
    pub(super) fn since_last() -> Duration {
        match LAST.load(Ordering::Relaxed) {
            0 => Duration::MAX,
            last => Duration::from_nanos(now().saturating_sub(last)),
        }
    }
}

/// Opens a pool ([`pool_options`]) on `url`, waiting up to [`CONNECT_DEADLINE`] for the server
/// to accept connections, and applies `migrations`.
pub async fn connect(
    url: &str,
    max_connections: u32,
    migrations: Option<&Migrator>,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
    let pool = pool_options(max_connections, Duration::from_secs(10)).connect_lazy_with(options);
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    loop {
        match pool.acquire().await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "database not ready yet, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
    if let Some(migrator) = migrations {
        migrator.run(&pool).await?;
    }
    Ok(pool)
}

/// Markers are read only while a decision is unfinished, which recovery settles in seconds.
pub const MARKER_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often old markers are deleted.
pub const MARKER_GC_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Deletes the 2PC markers in `pool`'s database older than [`MARKER_RETENTION`], every
/// [`MARKER_GC_INTERVAL`] until `tasks` stop.
pub fn collect_markers(tasks: &Tasks, pool: PgPool) {
    tasks.every(MARKER_GC_INTERVAL, move || {
        let pool = pool.clone();
        async move {
            match twopc::finish::gc_markers(&pool, MARKER_RETENTION).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted old 2pc markers"),
                Err(error) => tracing::warn!(%error, "cannot delete old 2pc markers"),
            }
        }
    });
}

/// How often [`watch`] samples a pool and the database's prepared transactions.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Samples `pool` (labelled `name`, the database) every [`WATCH_INTERVAL`] until `tasks` stop:
/// connection counts, a timed probe acquire, and the checkout's prepared transactions in the
/// database (see [`crate::telemetry::PREPARED_BRANCHES`]).
pub fn watch(tasks: &Tasks, pool: PgPool, name: &'static str) {
    tasks.every(WATCH_INTERVAL, move || {
        let pool = pool.clone();
        async move { sample(&pool, name).await }
    });
}

async fn sample(pool: &PgPool, name: &'static str) {
    use crate::telemetry::{
        DB_POOL_ACQUIRE, DB_POOL_ACQUIRE_ERRORS, PREPARED_BRANCHES, PREPARED_OLDEST,
    };
    let started = std::time::Instant::now();
    let acquired = pool.acquire().await;
    crate::telemetry::record_pool(pool, name);
    let mut connection = match acquired {
        Ok(connection) => {
            metrics::histogram!(DB_POOL_ACQUIRE, "pool" => name)
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(DB_POOL_ACQUIRE_ERRORS, "pool" => name).increment(0);
            connection
        }
        Err(error) => {
            tracing::debug!(%error, pool = name, "pool probe got no connection");
            metrics::counter!(DB_POOL_ACQUIRE_ERRORS, "pool" => name).increment(1);
            return;
        }
    };
    let prepared: Result<(i64, f64), sqlx::Error> = sqlx::query_as(
        "select count(*), coalesce(extract(epoch from now() - min(prepared)), 0)::float8 \
         from pg_prepared_xacts where database = current_database() and starts_with(gid, $1)",
    )
    .bind(twopc::gid::GID_PREFIX)
    .fetch_one(&mut *connection)
    .await;
    match prepared {
        Ok((count, oldest)) => {
            metrics::gauge!(PREPARED_BRANCHES, "database" => name).set(count as f64);
            metrics::gauge!(PREPARED_OLDEST, "database" => name).set(oldest.max(0.0));
        }
        Err(error) => {
            note_broken(&error);
            tracing::debug!(%error, "cannot read pg_prepared_xacts");
        }
    }
}

pub use twopc::sqlstate::has_code;

/// True when `error` says the database could not be reached or is not (yet) a writable
/// primary: a connection that broke or was refused, a pool that found none in time, a server
/// shutting down or still starting, a standby refusing a write. During a failover these last
/// a few seconds and then the same statement succeeds on the new primary, so an idempotent
/// step may retry on them. Never a business answer.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    is_broken(error)
        || matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        // 25006: read-only transaction (a standby, or a demoted primary).
        || twopc::sqlstate::has_code(error, "25006")
}

/// SQLSTATE for a value out of range (an `i64` overflow inside SQL arithmetic).
pub const NUMERIC_OUT_OF_RANGE: &str = "22003";

/// What an addition to a counter row did (see [`add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Done,
    /// No row has that id; nothing changed.
    UnknownId,
    /// The sum does not fit in an `i64`; nothing changed.
    Overflow,
}

/// Runs `sql`, an `update ... set counter = counter + $2 where id = $1` of the caller's own
/// table, and says which of the three things happened: the participants' "add stock" and
/// "add funds", which differ in table, column and errors but not in what can go wrong.
pub async fn add(
    db: impl sqlx::PgExecutor<'_>,
    sql: &'static str,
    id: &str,
    amount: i64,
) -> Result<Added, sqlx::Error> {
    match sqlx::query(sql).bind(id).bind(amount).execute(db).await {
        Ok(done) if done.rows_affected() == 0 => Ok(Added::UnknownId),
        Ok(_) => Ok(Added::Done),
        Err(error) if has_code(&error, NUMERIC_OUT_OF_RANGE) => Ok(Added::Overflow),
        Err(error) => Err(error),
    }
}
