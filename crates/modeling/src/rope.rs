//! Rotary position embedding tables (non-interleaved, "rotate half"), with Llama 3 scaling.

use candle_core::{DType, Device, Result, Tensor};

use crate::config::{Llama3RopeScaling, ModelConfig};

/// Precomputed cos/sin tables of shape `[max_positions, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    cos: Tensor,
    sin: Tensor,
}

/// Per-dimension inverse frequencies, adjusted for Llama 3 scaling or explicit GGUF factors.
pub fn inverse_frequencies(cfg: &ModelConfig, freq_factors: Option<&[f32]>) -> Vec<f32> {
    let half = cfg.head_dim / 2;
    (0..half)
        .map(|i| {
            let freq = 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32);
            match (freq_factors, cfg.rope_scaling) {
                (Some(factors), _) => freq / factors.get(i).copied().unwrap_or(1.0),
                (None, Some(s)) => llama3_adjust(freq, &s),
                (None, None) => freq,
            }
        })
        .collect()
}

fn llama3_adjust(freq: f32, s: &Llama3RopeScaling) -> f32 {
    let old_ctx = s.original_max_position_embeddings as f32;
    let wavelen = 2.0 * std::f32::consts::PI / freq;
    let low_freq_wavelen = old_ctx / s.low_freq_factor;
    let high_freq_wavelen = old_ctx / s.high_freq_factor;
    if wavelen < high_freq_wavelen {
        freq
    } else if wavelen > low_freq_wavelen {
        freq / s.factor
    } else {
        let smooth = (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        (1.0 - smooth) * freq / s.factor + smooth * freq
    }
}

impl RotaryEmbedding {
    pub fn new(inv_freq: &[f32], max_positions: usize, dtype: DType, device: &Device) -> Result<Self> {
        let half = inv_freq.len();
        let mut angles = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            angles.extend(inv_freq.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (max_positions, half), device)?;
        Ok(Self { cos: angles.cos()?.to_dtype(dtype)?, sin: angles.sin()?.to_dtype(dtype)? })
    }

    /// Tables for the given positions (u32 `[num_tokens]`), each `[num_tokens, head_dim / 2]`.
    pub fn select(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.index_select(positions, 0)?, self.sin.index_select(positions, 0)?))
    }

    /// Rotates `x` (`[num_tokens, heads, head_dim]`) by the selected tables.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let rotated = candle_nn::rotary_emb::rope_thd(&x.unsqueeze(0)?.contiguous()?, cos, sin)?;
        rotated.squeeze(0)
    }
}
