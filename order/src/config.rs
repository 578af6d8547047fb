//! Command-line and environment configuration.

use std::net::SocketAddr;

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

    /// Bound on one call to the coordinator or the stock service. A checkout that takes longer
    /// (a queue on a hot row) is not lost: its outcome is then asked for until it is known, so
    /// the bound mainly decides how soon a coordinator that vanished without closing its
    /// connections (a crashed container) is noticed.
    #[arg(long, env = "COORDINATOR_TIMEOUT_MS", default_value_t = 15_000)]
    pub coordinator_timeout_ms: u64,

    /// How long a checkout whose reply from the coordinator was lost keeps asking for its
    /// outcome before it answers 503.
    #[arg(long, env = "OUTCOME_DEADLINE_MS", default_value_t = 60_000)]
    pub outcome_deadline_ms: u64,

    /// Database pool size.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}
