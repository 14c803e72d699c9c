//! Llama-architecture GGUF files: metadata to config and tokenizer, tensors dequantized to HF names.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use sconce_text::GgufVocab;

use crate::config::ModelConfig;
use crate::error::ModelError;

/// Everything read from one GGUF file.
pub struct GgufModel {
    pub config: ModelConfig,
    pub vocab: GgufVocab,
    pub chat_template: Option<String>,
    pub tensors: HashMap<String, Tensor>,
    pub rope_freq_factors: Option<Vec<f32>>,
}

fn weights_error(path: &Path, reason: impl ToString) -> ModelError {
    ModelError::Weights { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads, dequantizes (to `dtype`) and renames every tensor of a GGUF file.
pub fn read_gguf(path: &Path, dtype: DType, device: &Device) -> Result<GgufModel, ModelError> {
    let file = File::open(path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| weights_error(path, e))?;
    let meta = Metadata { map: &content.metadata };
    let arch = meta.string("general.architecture")?;
    if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "qwen3") {
        return Err(ModelError::Unsupported(format!("GGUF architecture `{arch}`")));
    }
    let vocab = read_vocab(&meta)?;
    let config = read_config(&meta, &arch, &content, vocab.tokens.len())?;
    let mut tensors = HashMap::new();
    let mut rope_freq_factors = None;
    for name in content.tensor_infos.keys() {
        let qtensor = content.tensor(&mut reader, name, device).map_err(|e| weights_error(path, e))?;
        let tensor = qtensor.dequantize(device).map_err(|e| weights_error(path, e))?;
        if name == "rope_freqs.weight" {
            rope_freq_factors = Some(tensor.to_vec1::<f32>()?);
            continue;
        }
        let Some(hf_name) = hf_tensor_name(name) else { continue };
        let tensor = unpermute_if_needed(tensor, name, &arch, &config)?;
        tensors.insert(hf_name, tensor.to_dtype(dtype)?);
    }
    let chat_template = meta.string("tokenizer.chat_template").ok();
    Ok(GgufModel { config, vocab, chat_template, tensors, rope_freq_factors })
}

struct Metadata<'a> {
    map: &'a HashMap<String, Value>,
}

impl Metadata<'_> {
    fn get(&self, key: &str) -> Result<&Value, ModelError> {
        self.map.get(key).ok_or_else(|| ModelError::Config(format!("GGUF metadata lacks `{key}`")))
    }

    fn string(&self, key: &str) -> Result<String, ModelError> {
        self.get(key)?.to_string().cloned().map_err(|e| ModelError::Config(format!("{key}: {e}")))
    }

    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.get(key)?;
        let n = match v {
            Value::I32(i) => u64::try_from(*i).ok(),
            Value::I64(i) => u64::try_from(*i).ok(),
            other => other.to_u64().ok(),
        };
        n.map(|n| n as usize).ok_or_else(|| ModelError::Config(format!("{key} is not a count: {v:?}")))
    }

    fn f32(&self, key: &str) -> Result<f32, ModelError> {
        match self.get(key)? {
            Value::F32(f) => Ok(*f),
            Value::F64(f) => Ok(*f as f32),
            v => Err(ModelError::Config(format!("{key} is not a float: {v:?}"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        let values = self.get(key)?.to_vec().map_err(|e| ModelError::Config(format!("{key}: {e}")))?;
        values.iter().map(|v| v.to_string().cloned().map_err(|e| ModelError::Config(e.to_string()))).collect()
    }

    fn ints(&self, key: &str) -> Result<Vec<i32>, ModelError> {
        let values = self.get(key)?.to_vec().map_err(|e| ModelError::Config(format!("{key}: {e}")))?;
        values
            .iter()
            .map(|v| match v {
                Value::I32(i) => Ok(*i),
                other => other.to_u64().map(|n| n as i32).map_err(|e| ModelError::Config(e.to_string())),
            })
            .collect()
    }

    fn id(&self, key: &str) -> Option<u32> {
        self.usize(key).ok().map(|n| n as u32)
    }
}

fn read_vocab(meta: &Metadata) -> Result<GgufVocab, ModelError> {
    Ok(GgufVocab {
        model: meta.string("tokenizer.ggml.model")?,
        pre: meta.string("tokenizer.ggml.pre").ok(),
        tokens: meta.strings("tokenizer.ggml.tokens")?,
        merges: meta.strings("tokenizer.ggml.merges").unwrap_or_default(),
        token_types: meta.ints("tokenizer.ggml.token_type").unwrap_or_default(),
        bos_id: meta.id("tokenizer.ggml.bos_token_id"),
        eos_id: meta.id("tokenizer.ggml.eos_token_id"),
        unk_id: meta.id("tokenizer.ggml.unknown_token_id"),
        add_bos: matches!(meta.get("tokenizer.ggml.add_bos_token"), Ok(Value::Bool(true))),
    })
}

fn read_config(meta: &Metadata, arch: &str, content: &Content, vocab_len: usize) -> Result<ModelConfig, ModelError> {
    let key = |k: &str| format!("{arch}.{k}");
    let hidden_size = meta.usize(&key("embedding_length"))?;
    let num_heads = meta.usize(&key("attention.head_count"))?;
    let has = |name: &str| content.tensor_infos.contains_key(name);
    let config = ModelConfig {
        architecture: arch.to_string(),
        hidden_size,
        intermediate_size: meta.usize(&key("feed_forward_length"))?,
        num_layers: meta.usize(&key("block_count"))?,
        num_heads,
        num_kv_heads: meta.usize(&key("attention.head_count_kv")).unwrap_or(num_heads),
        head_dim: meta.usize(&key("rope.dimension_count")).unwrap_or(hidden_size / num_heads.max(1)),
        vocab_size: meta.usize(&key("vocab_size")).unwrap_or(vocab_len),
        rms_norm_eps: meta.f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
        rope_theta: meta.f32(&key("rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: meta.usize(&key("context_length")).unwrap_or(4096),
        tie_word_embeddings: !has("output.weight"),
        attention_bias: has("blk.0.attn_q.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        bos_token_id: meta.id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: meta.id("tokenizer.ggml.eos_token_id").into_iter().collect(),
    };
    config.validate()?;
    Ok(config)
}

/// Maps llama.cpp tensor names to Hugging Face names.
fn hf_tensor_name(name: &str) -> Option<String> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let (part, kind) = suffix.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// llama.cpp stores llama q/k rows interleaved per head (for its pairwise RoPE); this restores the
/// Hugging Face "rotate half" order: rows `(head, i, pair)` go back to `(head, pair, i)`.
fn unpermute_if_needed(tensor: Tensor, name: &str, arch: &str, cfg: &ModelConfig) -> candle_core::Result<Tensor> {
    if arch != "llama" && arch != "mistral" {
        return Ok(tensor);
    }
    let heads = if name.ends_with("attn_q.weight") {
        cfg.num_heads
    } else if name.ends_with("attn_k.weight") {
        cfg.num_kv_heads
    } else {
        return Ok(tensor);
    };
    let (rows, cols) = tensor.dims2()?;
    tensor.reshape((heads, rows / heads / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_llama_cpp_names() {
        assert_eq!(hf_tensor_name("blk.3.attn_q.weight").as_deref(), Some("model.layers.3.self_attn.q_proj.weight"));
        assert_eq!(hf_tensor_name("blk.0.ffn_down.weight").as_deref(), Some("model.layers.0.mlp.down_proj.weight"));
        assert_eq!(hf_tensor_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_tensor_name("blk.0.unknown.weight"), None);
    }

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        let cfg = ModelConfig {
            architecture: "llama".into(),
            hidden_size: 3,
            intermediate_size: 1,
            num_layers: 1,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            vocab_size: 1,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            rope_scaling: None,
            max_position_embeddings: 8,
            tie_word_embeddings: true,
            attention_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let dev = Device::Cpu;
        let hf = Tensor::arange(0f32, 24.0, &dev).unwrap().reshape((8, 3)).unwrap();
        // llama.cpp's permute: reshape(heads, 2, d/2, cols).swapaxes(1, 2).
        let gguf =
            hf.reshape((2, 2, 2, 3)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((8, 3)).unwrap();
        let back = unpermute_if_needed(gguf, "blk.0.attn_q.weight", "llama", &cfg).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), hf.to_vec2::<f32>().unwrap());
    }
}
