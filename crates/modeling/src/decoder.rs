//! The one Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3, SmolLM2), configured by
//! [`ModelConfig`]. It runs a flattened batch of tokens and leaves attention to an [`Attention`].

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use crate::attention::Attention;
use crate::config::ModelConfig;
use crate::rope::{inverse_frequencies, RotaryEmbedding};
use std::sync::Arc;

use sconce_kernels::{add_rms_norm, linear_f32_acc, linear_q8, rotary_in_place, silu_and_mul, Q8Matrix};

/// CPU runs activations in f32 whatever the weight dtype; GPUs compute in the weight dtype.
pub fn activation_dtype(device: &Device, weight_dtype: DType) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        weight_dtype
    }
}

/// How linear weights are stored after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// Int8 with one f32 scale per 32 values (GGML's Q8_0 layout); CPU only.
    Q8_0,
}

impl Quantization {
    /// `q8_0`; `none` (or empty) means no quantization.
    pub fn parse(name: &str) -> std::result::Result<Option<Self>, String> {
        match name {
            "" | "none" => Ok(None),
            "q8_0" | "q8" => Ok(Some(Self::Q8_0)),
            other => Err(format!("unknown quantization `{other}` (use q8_0 or none)")),
        }
    }
}

/// A projection `x Wᵀ (+ b)`.
#[derive(Debug, Clone)]
struct Projection {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Set when quantized; `weight` is then an empty placeholder (or the shared embedding).
    q8: Option<Arc<Q8Matrix>>,
}

impl Projection {
    fn load(vb: &VarBuilder, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Self> {
        let vb = vb.pp(name);
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?.to_dtype(activation_dtype(vb.device(), vb.dtype()))?)
        } else {
            None
        };
        Ok(Self { weight, bias, q8: None })
    }

    /// Stacks projections that read the same input into one (fused QKV, fused gate-up).
    fn fuse(parts: &[Projection]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let weight = Tensor::cat(&weights, 0)?;
        let bias = match parts.iter().map(|p| p.bias.clone()).collect::<Option<Vec<_>>>() {
            Some(biases) => Some(Tensor::cat(&biases, 0)?),
            None => None,
        };
        Ok(Self { weight, bias, q8: None })
    }

    /// Replaces the weights with their Q8_0 form; `keep_dense` keeps the tensor (a shared embedding).
    fn quantize_q8(&mut self, keep_dense: bool) -> Result<()> {
        if self.q8.is_none() {
            self.q8 = Some(Arc::new(Q8Matrix::quantize(&self.weight)?));
            if !keep_dense {
                self.weight = Tensor::zeros(0, self.weight.dtype(), self.weight.device())?;
            }
        }
        Ok(())
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // On CPU, activations are f32 and weights may be half precision: our own kernel reads
        // each weight once per step; it beats a general GEMM for the small token counts of decode.
        let use_kernel = x.device().is_cpu() && (self.weight.dtype() != DType::F32 || x.dim(0)? <= 16);
        let y = match &self.q8 {
            Some(q8) => linear_q8(x, q8)?,
            None if use_kernel => linear_f32_acc(x, &self.weight)?,
            None => x.matmul(&self.weight.t()?)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(vb: &VarBuilder, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(dim, &format!("{name}.weight"))?;
        Ok(Self { weight: weight.to_dtype(activation_dtype(vb.device(), vb.dtype()))?, eps: eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            candle_nn::ops::rms_norm(x, &self.weight, self.eps)
        } else {
            sconce_kernels::rms_norm(&x.contiguous()?, &self.weight, self.eps)
        }
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    input_norm: RmsNorm,
    qkv: Projection,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    o_proj: Projection,
    post_norm: RmsNorm,
    gate_up: Projection,
    down: Projection,
}

impl DecoderLayer {
    fn load(vb: &VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let attn = vb.pp("self_attn");
        let q = Projection::load(&attn, "q_proj", cfg.num_heads * d, h, cfg.attention_bias)?;
        let k = Projection::load(&attn, "k_proj", cfg.num_kv_heads * d, h, cfg.attention_bias)?;
        let v = Projection::load(&attn, "v_proj", cfg.num_kv_heads * d, h, cfg.attention_bias)?;
        let head_norm = |name| RmsNorm::load(&attn, name, d, cfg.rms_norm_eps);
        let mlp = vb.pp("mlp");
        let gate = Projection::load(&mlp, "gate_proj", cfg.intermediate_size, h, false)?;
        let up = Projection::load(&mlp, "up_proj", cfg.intermediate_size, h, false)?;
        Ok(Self {
            input_norm: RmsNorm::load(vb, "input_layernorm", h, cfg.rms_norm_eps)?,
            qkv: Projection::fuse(&[q, k, v])?,
            q_norm: if cfg.qk_norm { Some(head_norm("q_norm")?) } else { None },
            k_norm: if cfg.qk_norm { Some(head_norm("k_norm")?) } else { None },
            o_proj: Projection::load(&attn, "o_proj", h, cfg.num_heads * d, false)?,
            post_norm: RmsNorm::load(vb, "post_attention_layernorm", h, cfg.rms_norm_eps)?,
            gate_up: Projection::fuse(&[gate, up])?,
            down: Projection::load(&mlp, "down_proj", h, cfg.intermediate_size, false)?,
        })
    }
}

/// Per-call inputs shared by all layers.
struct StepInputs<'a> {
    cos: Tensor,
    sin: Tensor,
    attention: &'a dyn Attention,
}

/// A Llama-family decoder-only transformer.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Projection,
    rope: RotaryEmbedding,
    dtype: DType,
    device: Device,
    /// Our fused kernels: add+RMSNorm, in-place RoPE on the QKV output, SiLU-and-mul.
    fused: bool,
}

impl Decoder {
    /// Loads the weights under Hugging Face names (`model.layers.N.self_attn.q_proj.weight`, ...).
    pub fn load(vb: VarBuilder, config: &ModelConfig, rope_freq_factors: Option<&[f32]>) -> Result<Self> {
        let model = vb.pp("model");
        let embed_weight = model.get((config.vocab_size, config.hidden_size), "embed_tokens.weight")?;
        let layers = (0..config.num_layers)
            .map(|i| DecoderLayer::load(&model.pp(format!("layers.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if config.tie_word_embeddings || !vb.contains_tensor("lm_head.weight") {
            Projection { weight: embed_weight.clone(), bias: None, q8: None }
        } else {
            Projection::load(&vb, "lm_head", config.vocab_size, config.hidden_size, false)?
        };
        let inv_freq = inverse_frequencies(config, rope_freq_factors);
        let dtype = activation_dtype(vb.device(), vb.dtype());
        let rope = RotaryEmbedding::new(&inv_freq, config.max_position_embeddings, dtype, vb.device())?;
        Ok(Self {
            embed: Embedding::new(embed_weight, config.hidden_size),
            norm: RmsNorm::load(&model, "norm", config.hidden_size, config.rms_norm_eps)?,
            config: config.clone(),
            layers,
            lm_head,
            rope,
            dtype,
            // On by default (on CPU their reference code is ~4% faster per decode step than
            // candle's separate ops); the engine's `unfused` switch turns them off.
            fused: true,
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The activation (and KV cache) dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Stores every linear weight (and the LM head) in `quantization`'s form. CPU only.
    pub fn quantize(&mut self, quantization: Quantization) -> Result<()> {
        if !self.device.is_cpu() {
            candle_core::bail!("{quantization:?} weights run on the CPU only");
        }
        for layer in &mut self.layers {
            for projection in [&mut layer.qkv, &mut layer.o_proj, &mut layer.gate_up, &mut layer.down] {
                projection.quantize_q8(false)?;
            }
        }
        let tied = self.lm_head.weight.id() == self.embed.embeddings().id();
        self.lm_head.quantize_q8(tied)
    }

    /// Turns the fused-kernel path on or off (on by default).
    pub fn set_fused(&mut self, fused: bool) {
        self.fused = fused;
    }

    /// Runs the flattened batch (`input_ids`, `positions`: u32 `[num_tokens]`) and returns f32
    /// logits `[rows, vocab]` for the token rows listed in `logits_rows` (all rows when `None`).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        attention: &dyn Attention,
        logits_rows: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (cos, sin) = self.rope.select(positions)?;
        let step = StepInputs { cos, sin, attention };
        let mut x = self.embed.forward(input_ids)?.to_dtype(self.dtype)?;
        for (index, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, index, &x, &step)?;
        }
        if let Some(rows) = logits_rows {
            x = x.index_select(rows, 0)?;
        }
        let x = self.norm.forward(&x)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
    }

    fn layer_forward(&self, layer: &DecoderLayer, index: usize, x: &Tensor, step: &StepInputs) -> Result<Tensor> {
        let attn_out = self.attention_block(layer, index, &layer.input_norm.forward(x)?, step)?;
        if self.fused {
            let (x, h) = add_rms_norm(&attn_out, x, &layer.post_norm.weight, layer.post_norm.eps)?;
            let act = silu_and_mul(&layer.gate_up.forward(&h)?)?;
            return x + layer.down.forward(&act)?;
        }
        let x = (x + attn_out)?;
        let gate_up = layer.gate_up.forward(&layer.post_norm.forward(&x)?)?;
        let inter = self.config.intermediate_size;
        let act = (candle_nn::ops::silu(&gate_up.narrow(1, 0, inter)?)? * gate_up.narrow(1, inter, inter)?)?;
        x + layer.down.forward(&act)?
    }

    fn attention_block(&self, layer: &DecoderLayer, index: usize, x: &Tensor, step: &StepInputs) -> Result<Tensor> {
        let c = &self.config;
        let tokens = x.dim(0)?;
        let (q_width, kv_width) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let qkv = layer.qkv.forward(x)?;
        if self.fused && layer.q_norm.is_none() {
            return self.fused_attention(layer, index, qkv, step);
        }
        let mut q = qkv.narrow(1, 0, q_width)?.reshape((tokens, c.num_heads, c.head_dim))?;
        let mut k = qkv.narrow(1, q_width, kv_width)?.reshape((tokens, c.num_kv_heads, c.head_dim))?;
        let v = qkv.narrow(1, q_width + kv_width, kv_width)?.reshape((tokens, c.num_kv_heads, c.head_dim))?;
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = qn.forward(&q.contiguous()?)?;
            k = kn.forward(&k.contiguous()?)?;
        }
        let q = RotaryEmbedding::apply(&q, &step.cos, &step.sin)?;
        let k = RotaryEmbedding::apply(&k, &step.cos, &step.sin)?;
        let out = step.attention.forward(index, &q, &k, &v.contiguous()?)?;
        layer.o_proj.forward(&out.reshape((tokens, q_width))?)
    }

    /// GPU path: RoPE in place on the QKV projection's q and k heads, then paged attention.
    fn fused_attention(&self, layer: &DecoderLayer, index: usize, qkv: Tensor, step: &StepInputs) -> Result<Tensor> {
        let c = &self.config;
        let tokens = qkv.dim(0)?;
        let qkv = qkv.contiguous()?.reshape((tokens, c.num_heads + 2 * c.num_kv_heads, c.head_dim))?;
        rotary_in_place(&qkv, &step.cos, &step.sin, c.num_heads + c.num_kv_heads)?;
        let q = qkv.narrow(1, 0, c.num_heads)?.contiguous()?;
        let k = qkv.narrow(1, c.num_heads, c.num_kv_heads)?.contiguous()?;
        let v = qkv.narrow(1, c.num_heads + c.num_kv_heads, c.num_kv_heads)?.contiguous()?;
        let out = step.attention.forward(index, &q, &k, &v)?;
        layer.o_proj.forward(&out.reshape((tokens, c.num_heads * c.head_dim))?)
    }
}

#[cfg(test)]
mod tests {
    use super::Quantization;

    #[test]
    fn quantization_names_parse_and_unknown_ones_say_what_to_use() {
        assert_eq!(Quantization::parse("q8_0"), Ok(Some(Quantization::Q8_0)));
        assert_eq!(Quantization::parse("none"), Ok(None));
        assert!(Quantization::parse("q4_k").unwrap_err().contains("use q8_0"));
    }
}
