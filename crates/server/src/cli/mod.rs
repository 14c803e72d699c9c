//! The `sconce` command line: a thin dispatcher with one module per subcommand.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod generate;
pub mod keys;
pub mod models;
pub mod prompts;
pub mod serve;

#[derive(Debug, Parser)]
#[command(name = "sconce", version, about = "Sconce: a self-hosted LLM inference server")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the OpenAI-compatible HTTP API.
    Serve(serve::ServeCommand),
    /// Generate from one prompt and stream the text to stdout.
    Generate(generate::GenerateArgs),
    /// List or fetch catalog models.
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Measure engine throughput in-process (closed loop, random prompts).
    Bench(bench::BenchArgs),
    /// Create, list or revoke gateway API keys.
    Keys(keys::KeysArgs),
    /// Create, list, show or label prompts in the gateway's registry.
    Prompts(prompts::PromptsArgs),
}

pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(command) => command.run(),
        Command::Generate(args) => generate::run(args),
        Command::Models { command } => models::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Prompts(args) => prompts::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Catches flags of flattened settings that clash (the same id or name twice).
    #[test]
    fn every_subcommand_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
