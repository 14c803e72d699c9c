//! Turns a resolved model source (HF folder or GGUF file) into a decoder plus its tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use sconce_text::{ChatTemplate, Tokenizer};
use serde_json::Value;

use crate::config::ModelConfig;
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::fetch::{resolve, FetchOptions, ModelSource};
use crate::gguf::read_gguf;

/// A model ready to run: weights, tokenizer, chat template and stop ids.
pub struct LoadedModel {
    pub name: String,
    pub decoder: Decoder,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: ChatTemplate,
    pub eos_token_ids: Vec<u32>,
}

/// Resolves `spec` (catalog name, Hub id or local path) and loads it.
pub fn load_model(spec: &str, dtype: DType, device: &Device, fetch: &FetchOptions) -> Result<LoadedModel, ModelError> {
    let source = resolve(spec, fetch)?;
    let mut model = load_source(&source, dtype, device)?;
    model.name = spec.to_string();
    Ok(model)
}

/// Loads an already-resolved source.
pub fn load_source(source: &ModelSource, dtype: DType, device: &Device) -> Result<LoadedModel, ModelError> {
    match source {
        ModelSource::HfFolder(dir) => load_hf_folder(dir, dtype, device),
        ModelSource::Gguf(path) => load_gguf(path, dtype, device),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.display().to_string(), source }
}

fn read_json(path: &Path) -> Result<Option<Value>, ModelError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// Loads a Hugging Face layout folder (config.json, safetensors, tokenizer files).
pub fn load_hf_folder(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedModel, ModelError> {
    let config_path = dir.join("config.json");
    let mut config =
        ModelConfig::from_hf_json(&std::fs::read_to_string(&config_path).map_err(io_error(&config_path))?)?;
    let shards = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; they must not be truncated while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&shards, dtype, device) }
        .map_err(|e| ModelError::Weights { path: dir.display().to_string(), reason: e.to_string() })?;
    let decoder = Decoder::load(vb, &config, None)
        .map_err(|e| ModelError::Weights { path: dir.display().to_string(), reason: e.to_string() })?;
    let mut tokenizer =
        Tokenizer::from_file(&dir.join("tokenizer.json")).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let tok_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
    let special = |key: &str| special_token_text(&tok_config[key]);
    let (bos, eos) = (special("bos_token"), special("eos_token"));
    if let Some(bos_text) = &bos {
        tokenizer.set_bos(tokenizer.token_to_id(bos_text).map(|id| (bos_text.clone(), id)));
    }
    if let Some(add_bos) = tok_config["add_bos_token"].as_bool() {
        tokenizer.set_add_bos_by_default(add_bos);
    }
    let mut eos_ids = generation_eos_ids(dir)?.unwrap_or_else(|| config.eos_token_ids.clone());
    if let Some(id) = eos.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
        push_unique(&mut eos_ids, id);
    }
    config.eos_token_ids = eos_ids.clone();
    let template = match tok_config["chat_template"].as_str() {
        Some(source) => ChatTemplate::new(source, bos, eos).map_err(|e| ModelError::Tokenizer(e.to_string()))?,
        None => ChatTemplate::chatml(),
    };
    Ok(LoadedModel {
        name: dir.display().to_string(),
        decoder,
        tokenizer: Arc::new(tokenizer),
        chat_template: template,
        eos_token_ids: eos_ids,
    })
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

/// `"<s>"` or `{"content": "<s>", ...}` in tokenizer_config.json.
fn special_token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn generation_eos_ids(dir: &Path) -> Result<Option<Vec<u32>>, ModelError> {
    let Some(gen) = read_json(&dir.join("generation_config.json"))? else { return Ok(None) };
    let ids = match &gen["eos_token_id"] {
        Value::Number(n) => n.as_u64().map(|id| vec![id as u32]),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_u64).map(|id| id as u32).collect()),
        _ => None,
    };
    Ok(ids)
}

/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let Some(index) = read_json(&index_path)? else {
        return Err(ModelError::Weights {
            path: dir.display().to_string(),
            reason: "no model.safetensors or index".into(),
        });
    };
    let mut files: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_str).map(|f| dir.join(f)).collect())
        .unwrap_or_default();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(ModelError::Weights { path: index_path.display().to_string(), reason: "empty weight_map".into() });
    }
    Ok(files)
}

/// Loads a GGUF file: dequantized weights, tokenizer from its vocabulary, template from metadata.
pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<LoadedModel, ModelError> {
    let gguf = read_gguf(path, dtype, device)?;
    let vb = VarBuilder::from_tensors(gguf.tensors, dtype, device);
    let decoder = Decoder::load(vb, &gguf.config, gguf.rope_freq_factors.as_deref())
        .map_err(|e| ModelError::Weights { path: path.display().to_string(), reason: e.to_string() })?;
    let mut tokenizer = Tokenizer::from_gguf_vocab(&gguf.vocab).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let token_text = |id: Option<u32>| id.and_then(|id| gguf.vocab.tokens.get(id as usize).cloned());
    let (bos, eos) = (token_text(gguf.vocab.bos_id), token_text(gguf.vocab.eos_id));
    tokenizer.set_add_bos_by_default(gguf.vocab.add_bos);
    let template = match &gguf.chat_template {
        Some(source) => ChatTemplate::new(source, bos, eos).map_err(|e| ModelError::Tokenizer(e.to_string()))?,
        None => ChatTemplate::chatml(),
    };
    Ok(LoadedModel {
        name: path.display().to_string(),
        decoder,
        tokenizer: Arc::new(tokenizer),
        chat_template: template,
        eos_token_ids: gguf.config.eos_token_ids.clone(),
    })
}
