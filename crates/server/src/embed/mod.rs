//! The embedding models served beside the chat model: each loaded once, with its tokenizer
//! and its own batcher thread. [`EmbeddingService::embed`] is the texts-in, unit-vectors-out
//! entry other stages (a semantic cache) can call.

pub mod batcher;
pub mod metrics;

use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sconce_modeling::{catalog, load_embedding_model, Device, FetchOptions};
use sconce_protocol::ApiError;
use sconce_text::Tokenizer;

use crate::config::ModelEntry;
use batcher::{BatchLimits, Queue};
use metrics::EmbeddingMetrics;

/// One served embedding model.
pub struct Embedder {
    /// The name clients send as `model`.
    pub name: String,
    /// What was loaded (catalog name, Hub id or folder).
    pub source: String,
    pub dimensions: usize,
    /// The most tokens one input may have.
    pub max_tokens: usize,
    pub vocab_size: usize,
    tokenizer: Arc<Tokenizer>,
    queue: Queue,
    metrics: Arc<EmbeddingMetrics>,
}

impl Embedder {
    /// The text's tokens, special tokens included.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer.encode(text, true).map_err(|e| ApiError::invalid_param("input", e.to_string()))
    }

    /// The text's tokens, cut to `max` with the special tokens kept at both ends
    /// (as sentence-transformers truncates).
    pub fn tokenize_truncated(&self, text: &str, max: usize) -> Result<Vec<u32>, ApiError> {
        let tokens = self.tokenize(text)?;
        if tokens.len() <= max {
            return Ok(tokens);
        }
        let mut kept = tokens[..max.saturating_sub(1)].to_vec();
        kept.extend(tokens.last().filter(|_| max > 1));
        Ok(kept)
    }

    /// Vectors for token inputs, in order, through the batcher; counted in the metrics.
    pub async fn embed_tokens(&self, inputs: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, ApiError> {
        let tokens = inputs.iter().map(Vec::len).sum();
        let vectors = self.queue.embed(inputs).await?;
        self.metrics.observe_request(&self.name, tokens);
        Ok(vectors)
    }

    /// Inputs waiting or running in this model's batcher.
    pub fn queued(&self) -> usize {
        self.queue.queued()
    }
}

/// Every embedding model, the first being the default.
pub struct EmbeddingService {
    models: Vec<Arc<Embedder>>,
    metrics: Arc<EmbeddingMetrics>,
}

impl EmbeddingService {
    /// Loads each `[[models]]` entry (on the blocking pool) and starts its batcher.
    pub async fn launch(entries: &[ModelEntry], allow_hub: bool) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(EmbeddingMetrics::new()?);
        let mut models = Vec::new();
        for entry in entries {
            entry.check()?;
            let (entry, metrics) = (entry.clone(), metrics.clone());
            let name = entry.name.clone();
            let load = move || load_one(&entry, allow_hub, metrics);
            let embedder = tokio::task::spawn_blocking(load).await?;
            models.push(Arc::new(embedder.with_context(|| format!("cannot load the embedding model `{name}`"))?));
        }
        Ok(Arc::new(Self { models, metrics }))
    }

    /// The model named `name`, or the default one when `name` is None.
    pub fn find(&self, name: Option<&str>) -> Option<&Arc<Embedder>> {
        match name {
            None => self.models.first(),
            Some(name) => self.models.iter().find(|model| model.name == name || model.source == name),
        }
    }

    pub fn models(&self) -> &[Arc<Embedder>] {
        &self.models
    }

    /// The series of every model, for `/metrics`.
    pub fn metrics(&self) -> &EmbeddingMetrics {
        &self.metrics
    }

    /// Unit vectors for `texts` from `model` (none: the default one), each cut to the model's
    /// length limit; the shape a gateway embedder takes.
    pub fn embed(
        self: &Arc<Self>,
        model: Option<String>,
        texts: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, ApiError>> {
        let service = self.clone();
        Box::pin(async move {
            let missing =
                || ApiError::unavailable(format!("no embedding model {} is served", model.as_deref().unwrap_or("")));
            let model = service.find(model.as_deref()).ok_or_else(missing)?;
            let inputs: Vec<Vec<u32>> =
                texts.iter().map(|text| model.tokenize_truncated(text, model.max_tokens)).collect::<Result<_, _>>()?;
            let vectors = model.embed_tokens(inputs).await?;
            Ok(vectors.into_iter().map(unit).collect())
        })
    }
}

fn load_one(entry: &ModelEntry, allow_hub: bool, metrics: Arc<EmbeddingMetrics>) -> anyhow::Result<Embedder> {
    let options = FetchOptions { allow_hub, ..FetchOptions::default() };
    let model = load_embedding_model(&entry.name, &Device::Cpu, &options)?;
    let catalog_name = catalog::find_entry(&entry.name).map(|found| found.served_name().to_string());
    let name = entry.served_model_name.clone().or(catalog_name).unwrap_or_else(|| entry.name.clone());
    let encoder = &model.encoder;
    let (dimensions, max_tokens, vocab_size) = (encoder.dimensions, encoder.max_tokens, encoder.vocab_size);
    let limits = BatchLimits {
        max_batch_tokens: entry.max_batch_tokens.max(max_tokens),
        max_batch_inputs: entry.max_batch_inputs,
        max_queued_inputs: entry.max_queued_inputs,
    };
    tracing::info!(model = %name, dimensions, max_tokens, "embedding model ready");
    let queue = batcher::start(model.encoder, limits, metrics.clone(), name.clone());
    let source = entry.name.clone();
    Ok(Embedder { name, source, dimensions, max_tokens, vocab_size, tokenizer: model.tokenizer, queue, metrics })
}

/// `vector` scaled to length 1 (a zero vector stays zero).
fn unit(vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return vector;
    }
    vector.into_iter().map(|x| x / norm).collect()
}
