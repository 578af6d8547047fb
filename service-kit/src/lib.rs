//! The service kit: what every process of the checkout system repeats.
//!
//! Each service (`order`, `participant-stock`, `participant-payment`, `coordinator`) wires the
//! same pieces in the same way: structured logs, a Prometheus recorder with HTTP metrics, a
//! PostgreSQL pool that waits for its database and applies its migrations, strict parsing of
//! path parameters, one outgoing HTTP client with timeouts, background tasks under one stop
//! signal, and graceful shutdown on SIGINT/SIGTERM. Keeping them here keeps every `main.rs` a
//! page long.

pub mod db;
pub mod http;
pub mod params;
pub mod peers;
pub mod sync;
pub mod tasks;
pub mod telemetry;

pub use params::{parse_amount, parse_count, parse_id, ParamError};

#[cfg(feature = "testing")]
pub mod testing;
