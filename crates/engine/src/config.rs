//! Engine sizing and limits: the `[engine]` section of the server config and its flags.

use clap::Args;
use sconce_modeling::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::size::ByteSize;

/// Engine sizing and limits. Each flag also reads its `SCONCE_*` variable; fields without a flag
/// are set in the TOML file only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Most sequences scheduled in one step.
    #[arg(long, env = "SCONCE_MAX_NUM_SEQS")]
    pub max_num_seqs: usize,
    /// Token budget of one step (decodes plus prefill chunks).
    #[arg(long, env = "SCONCE_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block.
    #[arg(skip)]
    pub block_size: usize,
    /// KV cache size, e.g. `2GiB`; when unset, a fraction of available memory.
    #[arg(long, env = "SCONCE_KV_CACHE_MEMORY")]
    pub kv_cache_memory: Option<ByteSize>,
    /// Fraction of available memory for the KV cache when `kv_cache_memory` is unset.
    #[arg(skip)]
    pub kv_cache_memory_fraction: f64,
    /// On a GPU without --kv-cache-memory: fraction of free device memory (after the weights) for
    /// the KV cache (default 0.9).
    #[arg(long, env = "SCONCE_GPU_MEMORY_UTILIZATION")]
    pub gpu_memory_utilization: f64,
    /// Waiting requests beyond this are refused (429).
    #[arg(long, env = "SCONCE_MAX_WAITING_REQUESTS")]
    pub max_waiting_requests: usize,
    /// Reuse KV blocks of identical prompt prefixes across requests.
    #[arg(skip)]
    pub enable_prefix_caching: bool,
    /// Caps the context length (prompt plus generated tokens).
    #[arg(long, env = "SCONCE_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// What a panic in the engine thread does: `exit` (fail its requests, mark the engine
    /// failed so the probes answer 503, and stop the server) or `restart` (fail its requests and
    /// start over with an empty KV cache, keeping the loaded weights).
    #[arg(long = "engine-on-panic", env = "SCONCE_ENGINE_ON_PANIC", value_enum)]
    pub on_panic: OnPanic,
    /// Largest constraint a request may send (a JSON schema, regex, choice list or grammar), in bytes.
    #[arg(long, env = "SCONCE_MAX_GRAMMAR_BYTES")]
    pub max_grammar_bytes: usize,
    /// Test hook: injected faults (see `FaultPlan`), e.g. `panic_at_step:3`.
    #[arg(skip)]
    #[serde(skip)]
    pub fault_inject: Option<String>,
    /// Test hook: return each sampled token's logits from `Engine::step`.
    #[arg(skip)]
    #[serde(skip)]
    pub capture_logits: bool,
}

impl Default for EngineConfig {
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
            on_panic: OnPanic::Exit,
            max_grammar_bytes: 64 << 10,
            fault_inject: None,
            capture_logits: false,
        }
    }
}

/// The `[engine] on_panic` policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnPanic {
    #[default]
    Exit,
    Restart,
}

impl EngineConfig {
    /// Blocks that fit the KV budget (CPU memory).
    pub fn num_kv_blocks(&self, model: &ModelConfig, dtype_size: usize) -> usize {
        self.num_kv_blocks_with(model, dtype_size, None)
    }

    /// Blocks that fit the KV budget; `gpu_free` is the device's free memory when on a GPU.
    pub fn num_kv_blocks_with(&self, model: &ModelConfig, dtype_size: usize, gpu_free: Option<u64>) -> usize {
        let bytes = self.kv_cache_memory.map(ByteSize::bytes).unwrap_or_else(|| match gpu_free {
            Some(free) => (free as f64 * self.gpu_memory_utilization.clamp(0.0, 1.0)) as u64,
            None => (available_memory() as f64 * self.kv_cache_memory_fraction) as u64,
        });
        let per_block = (model.kv_bytes_per_token(dtype_size) * self.block_size.max(1)) as u64;
        (bytes / per_block.max(1)) as usize
    }

    /// The context length served: the model's, capped by config and by the whole KV cache.
    pub fn max_model_len(&self, model: &ModelConfig, num_blocks: usize) -> usize {
        let mut len = model.max_position_embeddings.min(num_blocks * self.block_size);
        if let Some(cap) = self.max_model_len {
            len = len.min(cap);
        }
        len
    }
}

/// Available system memory in bytes (`MemAvailable`), or 4 GiB when unknown.
pub fn available_memory() -> u64 {
    let fallback = 4 << 30;
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else { return fallback };
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(fallback, |kb| kb * 1024)
}
