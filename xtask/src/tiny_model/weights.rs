//! Seeded random f32 weights with Hugging Face Llama tensor names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Dims;

/// Std for attention and MLP projections.
const PROJ_STD: f32 = 0.08;
/// Std for the embedding table and `lm_head`: large enough for varied logits.
const EMBED_STD: f32 = 0.5;
/// Noise added to the RMSNorm weights around 1.0.
const NORM_NOISE: f32 = 0.02;

/// How one tensor is initialised: `mean + std * N(0, 1)`.
#[derive(Clone, Copy)]
struct Init {
    mean: f32,
    std: f32,
}

const PROJ: Init = Init { mean: 0.0, std: PROJ_STD };
const EMBED: Init = Init { mean: 0.0, std: EMBED_STD };
const NORM: Init = Init { mean: 1.0, std: NORM_NOISE };

/// One tensor: HF name, shape and init.
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    init: Init,
}

fn spec(name: String, shape: &[usize], init: Init) -> Spec {
    let shape = shape.to_vec();
    Spec { name, shape, init }
}

fn layer_specs(d: &Dims, i: usize) -> Vec<Spec> {
    let (h, m) = (d.hidden, d.intermediate);
    let (q, kv) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let p = |s: &str| format!("model.layers.{i}.{s}.weight");
    vec![
        spec(p("input_layernorm"), &[h], NORM),
        spec(p("self_attn.q_proj"), &[q, h], PROJ),
        spec(p("self_attn.k_proj"), &[kv, h], PROJ),
        spec(p("self_attn.v_proj"), &[kv, h], PROJ),
        spec(p("self_attn.o_proj"), &[h, q], PROJ),
        spec(p("post_attention_layernorm"), &[h], NORM),
        spec(p("mlp.gate_proj"), &[m, h], PROJ),
        spec(p("mlp.up_proj"), &[m, h], PROJ),
        spec(p("mlp.down_proj"), &[h, m], PROJ),
    ]
}

/// Every tensor of the model, in generation order.
pub fn specs(d: &Dims) -> Vec<Spec> {
    let (v, h) = (d.vocab, d.hidden);
    let mut all = vec![spec("model.embed_tokens.weight".into(), &[v, h], EMBED)];
    all.extend((0..d.layers).flat_map(|i| layer_specs(d, i)));
    all.push(spec("model.norm.weight".into(), &[h], NORM));
    all.push(spec("lm_head.weight".into(), &[v, h], EMBED));
    all
}

/// Approximate N(0, 1): Irwin-Hall sum of 12 uniforms, minus 6.
/// Uses only additions, so it is bit-identical on every platform.
fn std_normal(rng: &mut ChaCha8Rng) -> f32 {
    (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0
}

fn sample(rng: &mut ChaCha8Rng, s: &Spec) -> Result<Tensor> {
    let n = s.shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| s.init.mean + s.init.std * std_normal(rng)).collect();
    Ok(Tensor::from_vec(data, s.shape.as_slice(), &Device::Cpu)?)
}

/// Samples all tensors from one seeded stream and writes them as safetensors.
pub fn write(d: &Dims, seed: u64, path: &Path) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    for s in specs(d) {
        let t = sample(&mut rng, &s)?;
        tensors.insert(s.name, t);
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}
