//! The `sconce` command line: a thin dispatcher with one module per subcommand.

use clap::{Parser, Subcommand};

pub mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "sconce",
    version,
    about = "Sconce: a self-hosted LLM inference server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI-compatible HTTP API.
    Serve(serve::ServeCommand),
}

pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(command) => command.run(),
    }
}
