use clap::Parser;
use order::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service_kit::telemetry::init_logs();
    let server = Server::build(Config::parse()).await?;
    server
        .run_until(service_kit::http::shutdown_signal())
        .await?;
    Ok(())
}
