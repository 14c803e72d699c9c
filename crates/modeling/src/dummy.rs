//! Synthetic weights (`--load-format dummy`): random tensors of a real model's shapes, made on the
//! device without files, plus a byte-level tokenizer stand-in. For benchmarks that send token ids.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use sconce_text::{ChatTemplate, GgufVocab, Tokenizer};

use crate::catalog::find_entry;
use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::loader::LoadedModel;

/// Standard deviation of the random weights (as HF `initializer_range`).
const INIT_STD: f64 = 0.02;

/// Hands out random weights for any name; norm weights are ones so activations stay in range.
struct RandomWeights {
    untied_head: bool,
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if name.ends_with("norm.weight") {
            return Tensor::ones(s, dtype, dev);
        }
        Tensor::randn(0f32, INIT_STD as f32, s, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("dummy weights: `{name}` has no known shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        name != "lm_head.weight" || self.untied_head
    }
}

/// A model config from a catalog name (its `[config]` table) or a path to a config.json.
pub fn dummy_config(spec: &str) -> std::result::Result<ModelConfig, ModelError> {
    let path = Path::new(spec);
    let json = if path.is_file() {
        std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: spec.to_string(), source })?
    } else {
        let entry = find_entry(spec).ok_or_else(|| ModelError::Config(format!("no catalog entry or file `{spec}`")))?;
        let config =
            entry.config.ok_or_else(|| ModelError::Config(format!("catalog entry `{spec}` has no [config]")))?;
        config.to_string()
    };
    ModelConfig::from_hf_json(&json)
}

/// Builds a decoder of `config`'s shape with random weights on `device`.
pub fn load_dummy(
    name: &str,
    config: &ModelConfig,
    dtype: DType,
    device: &Device,
) -> std::result::Result<LoadedModel, ModelError> {
    let weights = |e: candle_core::Error| ModelError::Weights { path: format!("dummy:{name}"), reason: e.to_string() };
    let backend = RandomWeights { untied_head: !config.tie_word_embeddings };
    let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
    let decoder = Decoder::load(vb, config, None).map_err(weights)?;
    let tokenizer = byte_tokenizer().map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let eos = vec![BYTE_EOS];
    Ok(LoadedModel {
        name: name.to_string(),
        decoder,
        tokenizer: Arc::new(tokenizer),
        chat_template: ChatTemplate::chatml(),
        eos_token_ids: eos,
    })
}

/// The end-of-text id of [`byte_tokenizer`].
pub const BYTE_EOS: u32 = 256;

/// GPT-2's byte-to-character map, so that every byte is one printable token.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap_or('?')
}

/// A byte-level tokenizer: ids 0..256 are bytes, 256 is `<|endoftext|>`. Ids past 256 decode to nothing.
pub fn byte_tokenizer() -> std::result::Result<Tokenizer, sconce_text::TextError> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.push("<|endoftext|>".into());
    let mut token_types = vec![1; 256];
    token_types.push(3);
    let vocab = GgufVocab { model: "gpt2".into(), tokens, token_types, eos_id: Some(BYTE_EOS), ..GgufVocab::default() };
    Tokenizer::from_gguf_vocab(&vocab)
}
