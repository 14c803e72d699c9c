//! Workspace automation: `cargo run -p xtask -- <command>`.

mod crate_graph;
mod tiny_model;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo run -p xtask -- <command>

commands:
  gen-tiny-model [--out DIR] [--seed N]   write the tiny random Llama fixture
                                          (default: tests/fixtures/tiny-llama, seed 42)
  check-crate-graph                       enforce the workspace dependency direction";

/// The workspace root (the parent of this crate's directory).
fn workspace_root() -> &'static Path {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask)
}

/// Options of `gen-tiny-model`.
struct GenArgs {
    out: PathBuf,
    seed: u64,
}

fn parse_gen_args(args: &[String]) -> Result<GenArgs> {
    let mut parsed = GenArgs { out: workspace_root().join(tiny_model::DEFAULT_OUT), seed: tiny_model::DEFAULT_SEED };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => parsed.out = PathBuf::from(value?),
            "--seed" => parsed.seed = value?.parse().context("--seed must be a u64")?,
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    Ok(parsed)
}

fn gen_tiny_model(args: &[String]) -> Result<()> {
    let GenArgs { out, seed } = parse_gen_args(args)?;
    let dims = tiny_model::generate(&out, seed)?;
    println!("wrote {} (seed {seed}, vocab {})", out.display(), dims.vocab);
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen-tiny-model") => gen_tiny_model(&args[1..]),
        Some("check-crate-graph") => crate_graph::run(workspace_root()),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}
