//! Executes one scheduled step: builds the flattened varlen batch and runs the decoder with
//! attention through the paged KV cache.

mod batch;

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use sconce_kernels::{paged_attention, reshape_and_cache, AttentionMetadata};
use sconce_modeling::{Attention, Decoder};

pub use batch::{BatchPlan, ChunkRows};

/// Per-layer K and V caches, each `[num_blocks, block_size, kv_heads, head_dim]`.
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    pub num_blocks: usize,
    pub block_size: usize,
}

impl KvCache {
    pub fn new(decoder: &Decoder, num_blocks: usize, block_size: usize) -> Result<Self> {
        let c = decoder.config();
        let shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim);
        let zeros = || Tensor::zeros(shape, decoder.dtype(), decoder.device());
        let layers = (0..c.num_layers).map(|_| Ok((zeros()?, zeros()?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, num_blocks, block_size })
    }
}

/// Attention that writes this step's K/V into the paged cache, then reads through block tables.
struct PagedBackend<'a> {
    cache: &'a KvCache,
    slot_mapping: Tensor,
    metadata: Arc<AttentionMetadata>,
    scale: f32,
}

impl Attention for PagedBackend<'_> {
    fn forward(&self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (k_cache, v_cache) = &self.cache.layers[layer];
        reshape_and_cache(k_cache, k, &self.slot_mapping)?;
        reshape_and_cache(v_cache, v, &self.slot_mapping)?;
        paged_attention(&q.contiguous()?, k_cache, v_cache, self.metadata.clone(), self.scale)
    }
}

pub struct ModelRunner {
    decoder: Decoder,
    cache: KvCache,
}

impl ModelRunner {
    pub fn new(decoder: Decoder, num_blocks: usize, block_size: usize) -> Result<Self> {
        let cache = KvCache::new(&decoder, num_blocks, block_size)?;
        Ok(Self { decoder, cache })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// Runs the batch; returns f32 logits `[plan.logits_rows.len(), vocab]` on the CPU.
    pub fn execute(&self, plan: BatchPlan) -> Result<Tensor> {
        let device = self.decoder.device();
        let num_tokens = plan.input_ids.len();
        let input_ids = Tensor::from_vec(plan.input_ids, num_tokens, device)?;
        let positions = Tensor::from_vec(plan.positions, num_tokens, device)?;
        let rows = Tensor::from_slice(&plan.logits_rows, plan.logits_rows.len(), device)?;
        let backend = PagedBackend {
            cache: &self.cache,
            slot_mapping: Tensor::from_vec(plan.slot_mapping, num_tokens, device)?,
            metadata: Arc::new(plan.metadata),
            scale: 1.0 / (self.decoder.config().head_dim as f32).sqrt(),
        };
        let logits = self.decoder.forward(&input_ids, &positions, &backend, Some(&rows))?;
        logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)
    }
}
