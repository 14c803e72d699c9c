//! The typed server configuration and its sources.
//!
//! Precedence: command-line flags > `SCONCE_*` environment variables > the TOML file >
//! built-in defaults. Flags and environment variables are read together by clap (each
//! flag names its variable); the file is merged underneath them here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

/// Where `sconce serve` looks for a config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/sconce.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub model: ModelConfig,
    pub engine: EngineSettings,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// The LLMOps layer: keys, limits, metering and the usage ledger.
    pub gateway: sconce_gateway::config::GatewayConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub max_request_body_bytes: ByteSize,
    /// Seconds to wait for in-flight requests after SIGTERM.
    pub drain_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { host: "127.0.0.1".into(), port: 8000, max_request_body_bytes: ByteSize(8 << 20), drain_timeout_secs: 30 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Catalog name, Hugging Face id, or local path.
    pub name: String,
    pub served_model_name: Option<String>,
    pub device: String,
    pub dtype: Option<String>,
    /// `q8_0`: int8 linear weights with per-32 scales (CPU only); unset or `none` keeps `dtype`.
    pub quantization: Option<String>,
    pub allow_hub: bool,
    /// `auto` (model files) or `dummy` (random weights of `model_config`'s shape, no files).
    pub load_format: String,
    /// For `dummy`: catalog name or config.json path (defaults to `name`).
    pub model_config: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "smollm2-135m-instruct".into(),
            served_model_name: None,
            device: "cpu".into(),
            dtype: None,
            quantization: None,
            allow_hub: true,
            load_format: "auto".into(),
            model_config: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub kv_cache_memory: Option<ByteSize>,
    pub kv_cache_memory_fraction: f64,
    /// On a GPU: fraction of free device memory (after the weights) for the KV cache.
    pub gpu_memory_utilization: f64,
    pub max_waiting_requests: usize,
    pub enable_prefix_caching: bool,
    pub max_model_len: Option<usize>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            block_size: 16,
            kv_cache_memory: None,
            kv_cache_memory_fraction: 0.1,
            gpu_memory_utilization: 0.9,
            max_waiting_requests: 1024,
            enable_prefix_caching: true,
            max_model_len: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Also expose every `sconce:` series under its `vllm:` name.
    pub vllm_compat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `sconce_server=debug`; `RUST_LOG` wins.
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

/// A size in bytes, written as a number or with a unit: `512MiB`, `4GB`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeValue", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeValue> for ByteSize {
    type Error = String;
    fn try_from(value: SizeValue) -> Result<Self, String> {
        match value {
            SizeValue::Number(bytes) => Ok(ByteSize(bytes)),
            SizeValue::Text(text) => text.parse(),
        }
    }
}

impl From<ByteSize> for u64 {
    fn from(size: ByteSize) -> u64 {
        size.0
    }
}

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a size"))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` (use B, KB, KiB, MB, MiB, GB, GiB)")),
        };
        Ok(ByteSize((number * scale as f64) as u64))
    }
}

/// Model flags, shared by every subcommand that loads a model.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelArgs {
    /// Catalog name, Hugging Face id, or local path of the model.
    #[arg(long, env = "SCONCE_MODEL")]
    pub model: Option<String>,
    /// The model name clients send and see.
    #[arg(long, env = "SCONCE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "SCONCE_DEVICE")]
    pub device: Option<String>,
    /// `f32`, `f16` or `bf16`.
    #[arg(long, env = "SCONCE_DTYPE")]
    pub dtype: Option<String>,
    /// `q8_0`: int8 linear weights with per-32 scales, about half the bytes of f16 (CPU only).
    #[arg(long, env = "SCONCE_QUANTIZATION")]
    pub quantization: Option<String>,
    /// `auto` (model files) or `dummy` (random weights, no files; see --model-config).
    #[arg(long, env = "SCONCE_LOAD_FORMAT")]
    pub load_format: Option<String>,
    /// For `--load-format dummy`: catalog name or config.json path (defaults to --model).
    #[arg(long, env = "SCONCE_MODEL_CONFIG")]
    pub model_config: Option<String>,
}

/// Engine sizing flags, shared by every subcommand that runs the engine.
#[derive(Debug, Clone, Default, Args)]
pub struct EngineArgs {
    /// Most sequences scheduled in one step.
    #[arg(long, env = "SCONCE_MAX_NUM_SEQS")]
    pub max_num_seqs: Option<usize>,
    /// Token budget of one step (decodes plus prefill chunks).
    #[arg(long, env = "SCONCE_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: Option<usize>,
    /// KV cache size, e.g. `2GiB`.
    #[arg(long, env = "SCONCE_KV_CACHE_MEMORY")]
    pub kv_cache_memory: Option<ByteSize>,
    /// Caps the context length (prompt plus generated tokens).
    #[arg(long, env = "SCONCE_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Waiting requests beyond this get 429.
    #[arg(long, env = "SCONCE_MAX_WAITING_REQUESTS")]
    pub max_waiting_requests: Option<usize>,
    /// On a GPU without --kv-cache-memory: fraction of free device memory for the KV cache (default 0.9).
    #[arg(long, env = "SCONCE_GPU_MEMORY_UTILIZATION")]
    pub gpu_memory_utilization: Option<f64>,
}

/// HTTP server flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Address to listen on (default 127.0.0.1).
    #[arg(long, env = "SCONCE_HOST")]
    pub host: Option<String>,
    /// TCP port (default 8000; 0 picks a free one).
    #[arg(long, env = "SCONCE_PORT")]
    pub port: Option<u16>,
    /// Largest accepted request body, e.g. `8MiB`.
    #[arg(long, env = "SCONCE_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<ByteSize>,
    /// Seconds to wait for in-flight requests after SIGTERM.
    #[arg(long, env = "SCONCE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<u64>,
    /// Log lines as text or JSON.
    #[arg(long, env = "SCONCE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// A tracing filter such as `info` or `sconce_server=debug` (`RUST_LOG` wins).
    #[arg(long, env = "SCONCE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Also expose metrics under `vllm:` names.
    #[arg(long, env = "SCONCE_METRICS_VLLM_COMPAT")]
    pub metrics_vllm_compat: Option<bool>,
}

fn set<T>(slot: &mut T, value: &Option<T>)
where
    T: Clone,
{
    if let Some(value) = value {
        *slot = value.clone();
    }
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

    pub fn apply_model_args(&mut self, args: &ModelArgs) {
        set(&mut self.model.name, &args.model);
        if args.served_model_name.is_some() {
            self.model.served_model_name = args.served_model_name.clone();
        }
        set(&mut self.model.device, &args.device);
        if args.dtype.is_some() {
            self.model.dtype = args.dtype.clone();
        }
        if args.quantization.is_some() {
            self.model.quantization = args.quantization.clone();
        }
        set(&mut self.model.load_format, &args.load_format);
        if args.model_config.is_some() {
            self.model.model_config = args.model_config.clone();
        }
    }

    pub fn apply_engine_args(&mut self, args: &EngineArgs) {
        let engine = &mut self.engine;
        set(&mut engine.max_num_seqs, &args.max_num_seqs);
        set(&mut engine.max_num_batched_tokens, &args.max_num_batched_tokens);
        set(&mut engine.max_waiting_requests, &args.max_waiting_requests);
        set(&mut engine.gpu_memory_utilization, &args.gpu_memory_utilization);
        if args.kv_cache_memory.is_some() {
            engine.kv_cache_memory = args.kv_cache_memory;
        }
        if args.max_model_len.is_some() {
            engine.max_model_len = args.max_model_len;
        }
    }

    pub fn apply_server_args(&mut self, args: &ServerArgs) {
        set(&mut self.server.host, &args.host);
        set(&mut self.server.port, &args.port);
        set(&mut self.server.max_request_body_bytes, &args.max_request_body_bytes);
        set(&mut self.server.drain_timeout_secs, &args.drain_timeout);
        set(&mut self.log.format, &args.log_format);
        set(&mut self.log.level, &args.log_level);
        set(&mut self.metrics.vllm_compat, &args.metrics_vllm_compat);
    }

    /// The name clients must send as `model`.
    pub fn served_name(&self) -> &str {
        self.model.served_model_name.as_deref().unwrap_or(&self.model.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!("1048576".parse::<ByteSize>().unwrap().bytes(), 1 << 20);
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().bytes(), 512 << 20);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().bytes(), 2_000_000_000);
        assert!("3 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn file_values_override_defaults_and_flags_override_the_file() {
        let mut config =
            Config::from_toml("[server]\nport = 9000\nhost = \"0.0.0.0\"\n[engine]\nkv_cache_memory = \"1GiB\"\n")
                .unwrap();
        assert_eq!(config.server.port, 9000);
        assert_eq!(config.engine.kv_cache_memory, Some(ByteSize(1 << 30)));
        assert_eq!(config.engine.max_num_seqs, 256);
        config.apply_server_args(&ServerArgs { port: Some(9100), ..ServerArgs::default() });
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.server.host, "0.0.0.0");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(Config::from_toml("[server]\nprot = 1\n").is_err());
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let mut config = Config::default();
        config.engine.kv_cache_memory = Some(ByteSize(123));
        let text = config.to_toml().unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), config);
    }

    #[test]
    fn shipped_config_file_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/sconce.toml");
        let shipped = Config::load(Some(Path::new(path))).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn shipped_config_file_documents_every_key() {
        let shipped = include_str!("../../../config/sconce.toml");
        let mut full = Config::default();
        full.model.served_model_name = Some("x".into());
        full.model.dtype = Some("f32".into());
        full.engine.kv_cache_memory = Some(ByteSize(1));
        full.engine.max_model_len = Some(1);
        let printed: toml::Table = toml::from_str(&full.to_toml().unwrap()).unwrap();
        for (section, keys) in printed {
            assert!(shipped.contains(&format!("[{section}]")), "missing [{section}]");
            for key in keys.as_table().unwrap().keys() {
                assert!(shipped.contains(&format!("{key} = ")), "config/sconce.toml lacks `{key}`");
            }
        }
    }
}
