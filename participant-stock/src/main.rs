//! `wdm-stock`: parses its configuration and runs the stock service until SIGINT/SIGTERM.

use clap::Parser;
use participant_stock::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let config = Config::parse();
    let app = App::build(config).await?;
    app.run_until(service_kit::http::shutdown_signal()).await?;
    Ok(())
}
