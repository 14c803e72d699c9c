//! BERT-family embedding models in the Hugging Face layout (candle-transformers' BERT),
//! pooled and normalised as their sentence-transformers files declare.

mod pooling;

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig, DTYPE};
use sconce_text::Tokenizer;

use crate::error::ModelError;
use crate::fetch::{self, FetchOptions, ModelSource};
pub use pooling::{l2_normalize, Pooling, PoolingConfig};

/// An embedding model ready to run: the encoder and its tokenizer.
pub struct EmbeddingModel {
    pub encoder: Encoder,
    pub tokenizer: Arc<Tokenizer>,
}

/// The BERT encoder with its pooling.
pub struct Encoder {
    bert: BertModel,
    pooling: PoolingConfig,
    device: Device,
    /// The vector length (`hidden_size`).
    pub dimensions: usize,
    /// The most tokens one input may have (`max_position_embeddings`).
    pub max_tokens: usize,
    /// Token ids must be below this.
    pub vocab_size: usize,
    pad_id: u32,
}

/// Resolves `spec` (catalog name, Hub id or local folder) and loads it.
pub fn load_embedding_model(spec: &str, device: &Device, opts: &FetchOptions) -> Result<EmbeddingModel, ModelError> {
    match fetch::resolve(spec, opts)? {
        ModelSource::HfFolder(dir) => load_embedding_folder(&dir, device),
        ModelSource::Gguf(path) => {
            Err(ModelError::Unsupported(format!("{}: embedding models load from an HF folder", path.display())))
        }
    }
}

/// Loads an HF folder: config.json (a BERT), model.safetensors, tokenizer.json and the
/// sentence-transformers pooling files.
pub fn load_embedding_folder(dir: &Path, device: &Device) -> Result<EmbeddingModel, ModelError> {
    let config = read_bert_config(dir)?;
    let weights = dir.join("model.safetensors");
    // SAFETY: the file is memory-mapped read-only; it must not be truncated while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DTYPE, device)? };
    let bert = BertModel::load(vb, &config)?;
    let encoder = Encoder {
        bert,
        pooling: PoolingConfig::from_dir(dir)?,
        device: device.clone(),
        dimensions: config.hidden_size,
        max_tokens: config.max_position_embeddings,
        vocab_size: config.vocab_size,
        pad_id: config.pad_token_id as u32,
    };
    Ok(EmbeddingModel { encoder, tokenizer: Arc::new(read_tokenizer(dir)?) })
}

fn read_bert_config(dir: &Path) -> Result<BertConfig, ModelError> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.display().to_string(), source })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config(e.to_string()))?;
    let model_type = json["model_type"].as_str().unwrap_or_default();
    if model_type != "bert" {
        return Err(ModelError::Unsupported(format!("model_type `{model_type}` as an embedding model (only bert)")));
    }
    serde_json::from_value(json).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// tokenizer.json without its own padding and truncation: the batcher pads, the API bounds.
fn read_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let path = dir.join("tokenizer.json");
    let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    inner.with_padding(None);
    inner.with_truncation(None).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(Tokenizer::from_tokenizers(inner))
}

impl Encoder {
    pub fn pooling(&self) -> PoolingConfig {
        self.pooling
    }

    /// One vector per input (token ids, special tokens included), in one padded batch.
    pub fn embed(&self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ModelError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let seq = inputs.iter().map(Vec::len).max().unwrap_or(0);
        if seq > self.max_tokens || inputs.iter().any(Vec::is_empty) {
            return Err(ModelError::Config(format!("each input needs 1 to {} tokens", self.max_tokens)));
        }
        if let Some(id) = inputs.iter().flatten().find(|id| **id as usize >= self.vocab_size) {
            return Err(ModelError::Config(format!(
                "token id {id} is not below the vocabulary size {}",
                self.vocab_size
            )));
        }
        let (ids, mask) = self.padded(inputs, seq);
        let shape = (inputs.len(), seq);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let states = self.bert.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        Ok(self.pooling.apply(&states, &mask)?.to_vec2::<f32>()?)
    }

    /// Row-major ids padded with the pad token, and the matching 1/0 mask.
    fn padded(&self, inputs: &[Vec<u32>], seq: usize) -> (Vec<u32>, Vec<u32>) {
        let mut ids = Vec::with_capacity(inputs.len() * seq);
        let mut mask = Vec::with_capacity(inputs.len() * seq);
        for input in inputs {
            ids.extend_from_slice(input);
            ids.extend(std::iter::repeat_n(self.pad_id, seq - input.len()));
            mask.extend(std::iter::repeat_n(1u32, input.len()));
            mask.extend(std::iter::repeat_n(0u32, seq - input.len()));
        }
        (ids, mask)
    }
}
