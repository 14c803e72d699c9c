//! `sconce serve`: resolve the configuration, set up logging and run the server
//! until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, Overrides};

#[derive(Debug, Clone, Args)]
pub struct ServeCommand {
    /// TOML config file (default: config/sconce.toml when it exists).
    #[arg(long, env = "SCONCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every config key that has a flag (and a `SCONCE_*` variable).
    #[command(flatten)]
    pub settings: Overrides<Config>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl ServeCommand {
    /// Defaults, then the file, then environment and flags.
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        self.settings.apply(&mut config)?;
        Ok(config)
    }

    pub fn run(self) -> anyhow::Result<()> {
        let config = self.resolve()?;
        if self.print_config {
            print!("{}", config.to_toml()?);
            return Ok(());
        }
        crate::logging::init(&config.log)?;
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let outcome = runtime.block_on(async {
            let shutdown = shutdown_signal()?;
            crate::server::run(config, shutdown).await
        });
        // A model still loading on a blocking thread must not hold up the exit.
        runtime.shutdown_timeout(Duration::from_secs(1));
        outcome
    }
}

/// Resolves on SIGTERM or SIGINT. Handlers are installed before it returns.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        serve: ServeCommand,
    }

    fn parse(args: &[&str]) -> Config {
        let argv = std::iter::once("sconce").chain(args.iter().copied());
        Harness::try_parse_from(argv).unwrap().serve.resolve().unwrap()
    }

    /// Environment variables are covered end to end in `tests/lifecycle.rs`, in a child
    /// process, so no test here mutates this process's environment.
    #[test]
    fn flags_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sconce.toml");
        std::fs::write(&file, "[server]\nport = 7001\nhost = \"10.0.0.1\"\n[engine]\nmax_num_seqs = 3\n").unwrap();
        let file = file.to_str().unwrap();
        let from_file = parse(&["--config", file]);
        let from_flags = parse(&["--config", file, "--port", "7003", "--max-num-seqs", "4"]);
        assert_eq!((from_file.server.port, from_file.engine.max_num_seqs), (7001, 3));
        assert_eq!((from_flags.server.port, from_flags.engine.max_num_seqs), (7003, 4));
        assert_eq!(from_flags.server.host, "10.0.0.1");
    }

    #[test]
    fn engine_flags_and_sizes_are_read() {
        let config = parse(&[
            "--config",
            "/dev/null",
            "--kv-cache-memory",
            "64MiB",
            "--max-num-batched-tokens",
            "512",
            "--device",
            "cuda:1",
            "--served-model-name",
            "tiny",
            "--log-format",
            "json",
        ]);
        assert_eq!(config.engine.kv_cache_memory.map(|size| size.bytes()), Some(64 << 20));
        assert_eq!(config.engine.max_num_batched_tokens, 512);
        assert_eq!(config.model.device, crate::config::DeviceSpec::Cuda(1));
        assert_eq!(config.served_name(), "tiny");
        assert_eq!(config.log.format, crate::config::LogFormat::Json);
    }
}
