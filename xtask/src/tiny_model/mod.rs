//! `gen-tiny-model`: a tiny random-weight Llama in Hugging Face layout.

pub mod tokenizer;
pub mod weights;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Default output directory, relative to the workspace root.
pub const DEFAULT_OUT: &str = "tests/fixtures/tiny-llama";
/// Default RNG seed.
pub const DEFAULT_SEED: u64 = 42;

/// `<|endoftext|>`: used as BOS id in `config.json` and as a second EOS.
const ENDOFTEXT_ID: u32 = 0;
/// `<|im_end|>`: the primary EOS.
const IM_END_ID: u32 = 2;

/// ChatML chat template.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Model dimensions.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
}

impl Dims {
    /// The fixed tiny shape, with the tokenizer's vocab size.
    pub fn tiny(vocab: usize) -> Self {
        Dims { hidden: 64, intermediate: 128, layers: 2, heads: 4, kv_heads: 2, head_dim: 16, vocab }
    }
}

/// The HF `config.json` contents.
pub fn config_json(d: &Dims) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "vocab_size": d.vocab,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "bos_token_id": ENDOFTEXT_ID,
        "eos_token_id": IM_END_ID,
        "torch_dtype": "float32",
        "hidden_act": "silu",
    })
}

fn tokenizer_config_json() -> Value {
    json!({
        "bos_token": null,
        "eos_token": tokenizer::SPECIAL_TOKENS[IM_END_ID as usize],
        "chat_template": CHAT_TEMPLATE,
        "add_bos_token": false,
    })
}

fn generation_config_json() -> Value {
    json!({ "eos_token_id": [IM_END_ID, ENDOFTEXT_ID] })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(&sorted(value))?;
    text.push('\n');
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `value` with object keys in sorted order, whether or not serde_json keeps insertion order
/// (a workspace build turns `preserve_order` on for everyone), so the files never change.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|key| (key.clone(), sorted(&map[key]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Writes all model files into `out`; returns the dims used.
pub fn generate(out: &Path, seed: u64) -> Result<Dims> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tok = tokenizer::build()?;
    tokenizer::write(&tok, &out.join("tokenizer.json"))?;
    let dims = Dims::tiny(tok.get_vocab_size(true));
    write_json(&out.join("config.json"), &config_json(&dims))?;
    write_json(&out.join("tokenizer_config.json"), &tokenizer_config_json())?;
    write_json(&out.join("generation_config.json"), &generation_config_json())?;
    weights::write(&dims, seed, &out.join("model.safetensors"))?;
    Ok(dims)
}

#[cfg(test)]
mod tests;
