//! One configuration for every Llama-family decoder; variants differ only here.

use serde::Deserialize;

use crate::error::ModelError;

/// Llama 3.x frequency-dependent RoPE scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// The shape and behaviour of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (Qwen2).
    pub attention_bias: bool,
    /// RMSNorm on each head of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![id],
            OneOrMany::Many(ids) => ids,
        }
    }
}

#[derive(Deserialize)]
struct HfRopeScaling {
    #[serde(alias = "type")]
    rope_type: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

/// The fields of a Hugging Face `config.json` that these decoders use.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    rope_scaling: Option<HfRopeScaling>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_max_positions() -> usize {
    4096
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json` for llama, mistral, qwen2 or qwen3.
    pub fn from_hf_json(json: &str) -> Result<Self, ModelError> {
        let hf: HfConfig = serde_json::from_str(json).map_err(|e| ModelError::Config(e.to_string()))?;
        let architecture = hf.model_type.clone().unwrap_or_else(|| "llama".into());
        if !matches!(architecture.as_str(), "llama" | "mistral" | "qwen2" | "qwen3") {
            return Err(ModelError::Unsupported(format!("model_type `{architecture}`")));
        }
        let config = ModelConfig {
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            attention_bias: hf.attention_bias.unwrap_or(architecture == "qwen2"),
            qk_norm: architecture == "qwen3",
            rope_scaling: hf.rope_scaling.as_ref().and_then(llama3_scaling),
            eos_token_ids: hf.eos_token_id.map(OneOrMany::into_vec).unwrap_or_default(),
            architecture,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            vocab_size: hf.vocab_size,
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            bos_token_id: hf.bos_token_id,
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects shapes the decoder cannot run.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: &str| Err(ModelError::Config(m.to_string()));
        if self.num_heads == 0 || self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad("num_attention_heads must be a positive multiple of num_key_value_heads");
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad("head_dim must be even and positive");
        }
        if self.hidden_size == 0 || self.num_layers == 0 || self.vocab_size == 0 {
            return bad("hidden_size, num_hidden_layers and vocab_size must be positive");
        }
        Ok(())
    }

    /// Bytes of K and V per token over all layers at `dtype_size` bytes per element.
    pub fn kv_bytes_per_token(&self, dtype_size: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_size
    }
}

fn llama3_scaling(s: &HfRopeScaling) -> Option<Llama3RopeScaling> {
    if s.rope_type.as_deref() != Some("llama3") {
        return None;
    }
    Some(Llama3RopeScaling {
        factor: s.factor.unwrap_or(8.0),
        low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
        high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
        original_max_position_embeddings: s.original_max_position_embeddings.unwrap_or(8192),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qwen3_and_llama3_variants() {
        let qwen3 = r#"{"model_type":"qwen3","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"vocab_size":100,"eos_token_id":[1,2]}"#;
        let c = ModelConfig::from_hf_json(qwen3).unwrap();
        assert!(c.qk_norm && !c.attention_bias);
        assert_eq!((c.head_dim, c.eos_token_ids.clone()), (32, vec![1, 2]));
        let llama = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":100,"eos_token_id":7,
            "rope_scaling":{"rope_type":"llama3","factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = ModelConfig::from_hf_json(llama).unwrap();
        assert_eq!(c.num_kv_heads, 4);
        assert_eq!(c.rope_scaling.map(|s| s.factor), Some(32.0));
        assert_eq!(c.eos_token_ids, vec![7]);
    }

    #[test]
    fn rejects_bad_shapes_and_architectures() {
        let bad_heads = r#"{"hidden_size":64,"intermediate_size":1,"num_hidden_layers":1,
            "num_attention_heads":3,"num_key_value_heads":2,"vocab_size":10}"#;
        assert!(matches!(ModelConfig::from_hf_json(bad_heads), Err(ModelError::Config(_))));
        let gpt2 = r#"{"model_type":"gpt2","hidden_size":64,"intermediate_size":1,"num_hidden_layers":1,
            "num_attention_heads":4,"vocab_size":10}"#;
        assert!(matches!(ModelConfig::from_hf_json(gpt2), Err(ModelError::Unsupported(_))));
        assert!(ModelConfig::from_hf_json("{not json").is_err());
    }
}
