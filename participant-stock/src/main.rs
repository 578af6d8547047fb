//! `wdm-stock`: parses its configuration and runs the stock service until SIGINT/SIGTERM.

use clap::Parser;
use participant_stock::{App, Config};

/// The stock service and 2PC participant.
#[derive(Parser)]
#[command(name = "wdm-stock")]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let app = App::build(Cli::parse().config).await?;
    app.run_until(service_kit::http::shutdown_signal()).await?;
    Ok(())
}
