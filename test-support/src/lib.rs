//! What the crate tests, the system tests and the benchmark share, so that each fact is
//! written once: the HTTP client of a service ([`Client`]), the course's consistency scenario
//! ([`Consistency`]), and the books' invariants every fault test checks ([`books`]).

pub mod books;
mod client;
mod consistency;

pub use client::Client;
pub use consistency::{Consistency, CONSISTENCY_ORDERS, CONSISTENCY_STOCK, CONSISTENCY_USERS};
