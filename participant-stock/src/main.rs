//! `wdm-stock`: parses its configuration and runs the stock service until SIGINT/SIGTERM.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    participant_server::run_main::<participant_stock::Stock>(
        "wdm-stock",
        "The stock service and 2PC participant",
    )
    .await
}
