use clap::Parser;
use coordinator::{Config, Coordinator};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let config = Config::parse();
    let coordinator = Coordinator::build(config).await?;
    coordinator
        .run_until(service_kit::http::shutdown_signal())
        .await?;
    Ok(())
}
