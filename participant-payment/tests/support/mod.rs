//! A real payment service on an ephemeral port, over a fresh database, and a client for it:
//! `participant_server::testing` for the payment participant.

#![allow(dead_code)]

use participant_payment::Payment;

pub type TestServer = participant_server::testing::TestServer<Payment>;

pub async fn spawn_app() -> TestServer {
    participant_server::testing::spawn_app::<Payment>().await
}

/// A valid gid for this participant, unique per call.
pub fn new_gid() -> twopc::Gid {
    participant_server::testing::new_gid::<Payment>()
}
