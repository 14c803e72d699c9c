//! The typed server configuration and its sources.
//!
//! Precedence: command-line flags > `SCONCE_*` environment variables > the TOML file >
//! built-in defaults. Each section is one struct that is both the TOML table (serde) and the
//! flags (clap `Args`, each flag naming its variable); the `[model]` and `[engine]` sections
//! are the engine's own [`LoadOptions`] and [`EngineConfig`]. [`Overrides`] lays the flags and
//! variables that were given over the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgAction, Args};
use serde::{Deserialize, Serialize};

mod overrides;

pub use overrides::Overrides;
pub use sconce_engine::{ByteSize, DeviceSpec, EngineConfig, LoadFormat, LoadOptions, QuantizationMode, WeightDtype};

/// Where `sconce serve` looks for a config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/sconce.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerConfig,
    /// Which model and how to load it.
    #[command(flatten)]
    pub model: LoadOptions,
    /// Engine sizing and limits.
    #[command(flatten)]
    pub engine: EngineConfig,
    #[command(flatten)]
    pub metrics: MetricsConfig,
    #[command(flatten)]
    pub log: LogConfig,
    /// How much one request may ask for: stop strings, logit_bias, n, logprobs, lengths.
    #[command(flatten)]
    pub limits: sconce_protocol::RequestLimits,
    /// The LLMOps layer: keys, limits, metering and the usage ledger (file only).
    #[arg(skip)]
    pub gateway: sconce_gateway::config::GatewayConfig,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (default 127.0.0.1).
    #[arg(long, env = "SCONCE_HOST")]
    pub host: String,
    /// TCP port (default 8000; 0 picks a free one).
    #[arg(long, env = "SCONCE_PORT")]
    pub port: u16,
    /// Largest accepted request body, e.g. `8MiB`.
    #[arg(long, env = "SCONCE_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: ByteSize,
    /// Seconds to wait for in-flight requests after SIGTERM.
    #[arg(long = "drain-timeout", env = "SCONCE_DRAIN_TIMEOUT", value_name = "SECONDS")]
    pub drain_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), port: 8000, max_request_body_bytes: ByteSize(8 << 20), drain_timeout_secs: 30 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Also expose every `sconce:` series under its `vllm:` name.
    #[arg(long = "metrics-vllm-compat", env = "SCONCE_METRICS_VLLM_COMPAT", action = ArgAction::Set, value_name = "BOOL")]
    pub vllm_compat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log lines as text or JSON.
    #[arg(long = "log-format", env = "SCONCE_LOG_FORMAT", value_enum)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `sconce_server=debug` (`RUST_LOG` wins).
    #[arg(long = "log-level", env = "SCONCE_LOG_LEVEL")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Reads `path`, or the default file when it exists, or nothing.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let path = match path {
            Some(path) => path.to_path_buf(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
            None => return Ok(Self::default()),
        };
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The name clients must send as `model`.
    pub fn served_name(&self) -> &str {
        self.model.served_model_name.as_deref().unwrap_or(&self.model.name)
    }
}

#[cfg(test)]
mod tests;
