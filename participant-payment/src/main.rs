//! `wdm-payment`: parses its configuration and runs the payment service until SIGINT/SIGTERM.

use clap::Parser;
use participant_payment::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let config = Config::parse();
    let app = App::build(config).await?;
    app.run_until(service_kit::http::shutdown_signal()).await?;
    Ok(())
}
