//! A real stock service on an ephemeral port, over a fresh database, and a client for it:
//! `participant_server::testing` for the stock participant.

#![allow(dead_code)]

use participant_stock::Stock;

pub type TestServer = participant_server::testing::TestServer<Stock>;

pub async fn spawn_app() -> TestServer {
    participant_server::testing::spawn_app::<Stock>().await
}

/// A valid gid for this participant, unique per call.
pub fn new_gid() -> twopc::Gid {
    participant_server::testing::new_gid::<Stock>()
}
