//! `wdm-recovery`: see `coordinator::cli` and docs/operations.md.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match coordinator::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(coordinator::cli::EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    coordinator::cli::run(cli).await
}
