use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench::run(bench::Options::parse()).await
}
