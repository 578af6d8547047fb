//! Command-line and environment configuration.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "wdm-order", about = "Order service")]
pub struct Config {
    /// Address to serve on (public routes under /orders, internal ones under /_2pc).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// The order database.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Base URL of the stock service on the internal network (for item prices).
    #[arg(long, env = "STOCK_URL")]
    pub stock_url: reqwest::Url,

    /// Base URLs of the coordinators (repeat, or space-separated in the environment). A
    /// checkout goes to any live one; the status of a transaction can be asked of any of them.
    #[arg(
        long = "coordinator-url",
        env = "COORDINATOR_URLS",
        value_delimiter = ' ',
        required = true
    )]
    pub coordinator_urls: Vec<reqwest::Url>,

    /// How long the coordinator has for every vote and the commit decision of one attempt
    /// (the transaction's deadline). Long enough for a queue on the consistency test's hot
    /// row; short, because a coordinator that stops mid-transaction keeps that transaction's
    /// rows locked until a peer may fence it off, which is once this deadline has passed.
    #[arg(long, env = "PHASE_ONE_MS", default_value_t = 5_000)]
    pub phase_one_ms: u64,

    /// How much longer than the deadline the coordinator may take to answer, finishing phase
    /// two so that a read right after a 200 sees the checkout.
    #[arg(long, env = "PHASE_TWO_WAIT_MS", default_value_t = 3_000)]
    pub phase_two_wait_ms: u64,

    /// The whole checkout: attempts after transient aborts, and following a transaction whose
    /// reply was lost, all end by then (a 409 if nothing can commit any more, a 503 only if no
    /// coordinator could tell the outcome). Below the gateway's server timeout.
    #[arg(long, env = "CHECKOUT_DEADLINE_MS", default_value_t = 20_000)]
    pub checkout_deadline_ms: u64,

    /// Checkouts this instance runs at once; the rest wait in a queue (see `admission`).
    /// Every checkout in flight may hold a prepared branch in each database, so the order
    /// instances together must run fewer than `max_prepared_transactions` (256): two
    /// instances × 64 = 128 leaves as many again for branches in doubt after a crash.
    #[arg(long, env = "CHECKOUTS_IN_FLIGHT", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkouts_in_flight: u32,

    /// How long a checkout may wait in that queue before it is refused for load: a 503 with
    /// `Retry-After`, nothing claimed, nothing changed. With the checkout's budget, below the
    /// gateway's server timeout.
    #[arg(long, env = "CHECKOUT_QUEUE_MS", default_value_t = 25_000)]
    pub checkout_queue_ms: u64,

    /// Batches of checkouts this instance has in flight at most (see `batch`): while one is
    /// in flight, the checkouts that become ready gather in the next batch, which takes its
    /// place when it ends.
    #[arg(long, env = "CHECKOUT_BATCHES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkout_batches: u32,

    /// How long a batch waits for the batch in flight to end before it takes another of the
    /// `CHECKOUT_BATCHES` places: how long a batch stuck in flight holds the others up.
    #[arg(long, env = "CHECKOUT_BATCH_PATIENCE_MS", default_value_t = 200)]
    pub checkout_batch_patience_ms: u64,

    /// Most checkouts in one batch (one global transaction).
    #[arg(long, env = "CHECKOUT_BATCH_MAX", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkout_batch_max: u32,

    /// Database pool size.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

impl Config {
    pub fn phase_one(&self) -> Duration {
        Duration::from_millis(self.phase_one_ms)
    }

    pub fn phase_two_wait(&self) -> Duration {
        Duration::from_millis(self.phase_two_wait_ms)
    }

    pub fn checkout_deadline(&self) -> Duration {
        Duration::from_millis(self.checkout_deadline_ms)
    }

    pub fn checkout_queue(&self) -> Duration {
        Duration::from_millis(self.checkout_queue_ms)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The gateway must never give up on a checkout the order service is still running: it
    /// would retry it on the other instance, or answer 504 for something that may commit.
    #[test]
    fn the_gateway_waits_longer_than_the_longest_checkout() {
        let config = Config::try_parse_from([
            "wdm-order",
            "--database-url",
            "postgres://localhost/order",
            "--stock-url",
            "http://127.0.0.1:1",
            "--coordinator-url",
            "http://127.0.0.1:2",
        ])
        .unwrap();
        let template = include_str!("../../haproxy/gateway.cfg.tmpl");
        let server_timeout = template
            .lines()
            .find_map(|line| line.trim().strip_prefix("timeout server "))
            .and_then(|value| value.trim().strip_suffix('s'))
            .and_then(|secs| secs.parse::<u64>().ok())
            .map(Duration::from_secs)
            .expect("the gateway template sets `timeout server <n>s`");
        // The queue, the budget, plus the reply margin of the last call to a coordinator.
        let longest = config.checkout_queue() + config.checkout_deadline() + Duration::from_secs(1);
        assert!(
            server_timeout > longest,
            "gateway timeout {server_timeout:?} must exceed the longest checkout {longest:?}"
        );
    }
}
