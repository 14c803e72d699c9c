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

mod models;
mod overrides;

use crate::conn::HttpLimits;

pub use models::{ModelEntry, ModelKind};
pub use overrides::Overrides;
pub use sconce_engine::{
    ByteSize, DeviceSpec, EngineConfig, LoadFormat, LoadOptions, OnPanic, QuantizationMode, WeightDtype,
};

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
    /// Embedding models served beside the chat model (`[[models]]`); the flag, repeatable,
    /// replaces the file's list.
    #[arg(
        long = "embedding-model",
        env = "SCONCE_EMBEDDING_MODEL",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = ModelEntry::from_flag
    )]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelEntry>,
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
    /// Seconds a client gets to send a request's headers, from their first byte (default 10).
    #[arg(long = "header-read-timeout", env = "SCONCE_HEADER_READ_TIMEOUT", value_name = "SECONDS")]
    pub header_read_timeout_secs: u64,
    /// Seconds a client gets to send a request's body, from the end of its headers (default 30).
    #[arg(long = "body-read-timeout", env = "SCONCE_BODY_READ_TIMEOUT", value_name = "SECONDS")]
    pub body_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may wait for its next request (default 60).
    #[arg(long = "idle-timeout", env = "SCONCE_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout_secs: u64,
    /// Seconds a write may wait for a client that stopped reading; then the connection closes,
    /// which aborts its stream and frees its KV (default 30).
    #[arg(long = "stream-send-timeout", env = "SCONCE_STREAM_SEND_TIMEOUT", value_name = "SECONDS")]
    pub stream_send_timeout_secs: u64,
    /// The kernel send buffer of each connection, e.g. `64KiB` (default: the kernel's autotuning,
    /// up to a few MiB, which a stalled client fills before the send timeout starts).
    #[arg(long, env = "SCONCE_SEND_BUFFER_BYTES")]
    pub send_buffer_bytes: Option<ByteSize>,
    /// Open connections beyond this are closed at once (default 4096).
    #[arg(long, env = "SCONCE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Requests in flight beyond this are answered 503 (default 1024; probes are exempt).
    #[arg(long, env = "SCONCE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let limits = HttpLimits::default();
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            max_request_body_bytes: ByteSize(8 << 20),
            drain_timeout_secs: 30,
            header_read_timeout_secs: limits.header_read_timeout.as_secs(),
            body_read_timeout_secs: limits.body_read_timeout.as_secs(),
            idle_timeout_secs: limits.idle_timeout.as_secs(),
            stream_send_timeout_secs: limits.send_timeout.as_secs(),
            send_buffer_bytes: None,
            max_connections: limits.max_connections,
            max_concurrent_requests: limits.max_concurrent_requests,
        }
    }
}

impl ServerConfig {
    /// The connection and request limits of the HTTP server.
    pub fn http_limits(&self) -> HttpLimits {
        let secs = std::time::Duration::from_secs;
        HttpLimits {
            header_read_timeout: secs(self.header_read_timeout_secs),
            body_read_timeout: secs(self.body_read_timeout_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            send_timeout: secs(self.stream_send_timeout_secs),
            max_connections: self.max_connections,
            max_concurrent_requests: self.max_concurrent_requests,
        }
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
