use clap::Parser;
use order::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let app = App::build(Config::parse()).await?;
    app.run_until(service_kit::http::shutdown_signal()).await?;
    Ok(())
}
