//! The decoder's attention is pluggable: the engine passes a paged-cache implementation, and
//! tests and references use [`ReferenceAttention`], which recomputes everything without a cache.

use candle_core::{DType, Result, Tensor, D};

/// Attention over a flattened batch. `q` is `[num_tokens, heads, head_dim]`, `k` and `v` are
/// `[num_tokens, kv_heads, head_dim]` (RoPE already applied); returns `[num_tokens, heads, head_dim]`.
pub trait Attention {
    fn forward(&self, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor>;
}

/// Plain causal attention with no cache: each sequence's tokens see only that sequence's earlier
/// tokens in the same input. `seq_lens` splits the flattened tokens into sequences.
#[derive(Debug, Clone)]
pub struct ReferenceAttention {
    pub seq_lens: Vec<usize>,
}

impl Attention for ReferenceAttention {
    fn forward(&self, _layer: usize, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let mut outputs = Vec::with_capacity(self.seq_lens.len());
        let mut start = 0;
        for &len in &self.seq_lens {
            let part = |t: &Tensor| t.narrow(0, start, len);
            outputs.push(causal_attention(&part(q)?, &part(k)?, &part(v)?)?);
            start += len;
        }
        Tensor::cat(&outputs, 0)
    }
}

/// Softmax(QKᵀ/√d + causal mask)V for one sequence, computed in f32.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (len, heads, dim) = q.dims3()?;
    let group = heads / k.dim(1)?;
    let expand = |t: &Tensor| -> Result<Tensor> {
        let t = t.to_dtype(DType::F32)?.transpose(0, 1)?; // [kv, len, d]
        let (kv, l, d) = t.dims3()?;
        t.unsqueeze(1)?.expand((kv, group, l, d))?.reshape((kv * group, l, d))
    };
    let q32 = q.to_dtype(DType::F32)?.transpose(0, 1)?.contiguous()?;
    let (k32, v32) = (expand(k)?.contiguous()?, expand(v)?.contiguous()?);
    let scores = (q32.matmul(&k32.t()?)? / (dim as f64).sqrt())?;
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    let mask = Tensor::from_vec(mask, (len, len), q.device())?;
    let probs = candle_nn::ops::softmax(&scores.broadcast_add(&mask)?, D::Minus1)?;
    probs.matmul(&v32)?.transpose(0, 1)?.contiguous()?.to_dtype(q.dtype())
}
