//! `wdm-payment`: parses its configuration and runs the payment service until SIGINT/SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant_server::run_main::<participant_payment::Payment>(
        "wdm-payment",
        "The payment service and 2PC participant",
    )
    .await
}
