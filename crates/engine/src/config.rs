//! Engine sizing and limits.

use sconce_modeling::ModelConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most sequences in one step.
    pub max_num_seqs: usize,
    /// Token budget of one step (decodes plus prefill chunks).
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV cache size in bytes; when unset, a fraction of available memory.
    pub kv_cache_memory: Option<u64>,
    pub kv_cache_memory_fraction: f64,
    /// On a GPU without `kv_cache_memory`: the fraction of free device memory (after the weights)
    /// given to the KV cache.
    pub gpu_memory_utilization: f64,
    /// Waiting requests beyond this are refused (overload).
    pub max_waiting_requests: usize,
    pub enable_prefix_caching: bool,
    /// Caps the model's context length.
    pub max_model_len: Option<usize>,
    /// Test hook: return each sampled token's logits from `Engine::step`.
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
            capture_logits: false,
        }
    }
}

impl EngineConfig {
    /// Blocks that fit the KV budget (CPU memory).
    pub fn num_kv_blocks(&self, model: &ModelConfig, dtype_size: usize) -> usize {
        self.num_kv_blocks_with(model, dtype_size, None)
    }

    /// Blocks that fit the KV budget; `gpu_free` is the device's free memory when on a GPU.
    pub fn num_kv_blocks_with(&self, model: &ModelConfig, dtype_size: usize, gpu_free: Option<u64>) -> usize {
        let bytes = self.kv_cache_memory.unwrap_or_else(|| match gpu_free {
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
