//! The semantic cache: a deterministic chat request that missed the exact cache is answered
//! with a cached answer to a similar question (cosine of their embeddings at or above the
//! threshold) from the same partition. See `docs/semantic-cache.md`.

pub mod config;
pub mod index;
pub mod metrics;
pub mod partition;
pub mod shared;
mod stage;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::api::Api;
use crate::error::GatewayError;
pub use config::{SemanticBackendKind, SemanticCacheConfig};
use index::{Entry, Index, Neighbour};
use metrics::SemanticMetrics;
use partition::LookupKey;
use shared::SharedEntries;
pub use stage::SemanticStage;

/// The header value of an answer served by the semantic cache.
pub const SEMANTIC_HIT: &str = "semantic-hit";
/// The hit's similarity, e.g. `0.9731`.
pub const SIMILARITY_HEADER: &str = "x-sconce-cache-similarity";
/// Larger answers are not cached.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Turns texts into vectors: the embedding model the server connects.
pub trait Embedder: Send + Sync + 'static {
    /// Unit-length vectors, one per text, in order.
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>>;
}

/// The semantic cache's state: its settings, the embedder, the index and, with
/// `backend = "postgres"`, the shared rows that keep replicas' indexes in step.
pub struct SemanticCache {
    config: SemanticCacheConfig,
    embedder: Arc<dyn Embedder>,
    index: Arc<Index>,
    shared: Option<SharedEntries>,
    metrics: Option<SemanticMetrics>,
}

impl SemanticCache {
    /// An in-process cache (whatever `config.backend` says).
    pub fn in_memory(config: SemanticCacheConfig, embedder: Arc<dyn Embedder>) -> Self {
        let index = Arc::new(Index::new(config.max_entries));
        Self { config, embedder, index, shared: None, metrics: None }
    }

    /// The configured backend; `postgres` loads the unexpired rows of `database_url` and
    /// listens for those other replicas add.
    pub async fn open(
        config: SemanticCacheConfig,
        embedder: Arc<dyn Embedder>,
        database_url: &str,
    ) -> Result<Self, GatewayError> {
        config.check(database_url)?;
        let mut cache = Self::in_memory(config, embedder);
        if cache.config.backend == SemanticBackendKind::Postgres {
            let shared = SharedEntries::open(database_url, cache.index.clone(), cache.config.max_entries).await;
            cache.shared = Some(shared.map_err(GatewayError::Internal)?);
        }
        Ok(cache)
    }

    pub fn with_metrics(mut self, metrics: Option<SemanticMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn config(&self) -> &SemanticCacheConfig {
        &self.config
    }

    /// Entries in this process's index.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The text's unit vector (the embedder's contract); none (a miss) when the embedder fails.
    async fn embed(&self, text: &str) -> Option<Vec<f32>> {
        match self.embedder.embed(vec![text.to_string()]).await {
            Ok(vectors) => vectors.into_iter().next(),
            Err(error) => {
                tracing::warn!(%error, "semantic cache: embedding failed, treated as a miss");
                None
            }
        }
    }

    /// The nearest entry at or above the threshold, counted in the metrics.
    fn lookup<A: Api>(&self, model: &str, key: &LookupKey, vector: &[f32], started: Instant) -> Option<Hit<A>> {
        let nearest = self.index.nearest(&key.partition, vector, now_ms());
        let best = nearest.as_ref().map(|n| n.similarity);
        let found = nearest.filter(|n| n.similarity >= self.config.threshold);
        let hit = found.as_ref().and_then(Hit::read);
        if let Some(found) = &found {
            self.index.touch(&found.id);
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_lookup(model, hit.is_some(), best, started.elapsed().as_secs_f64());
        }
        hit
    }

    /// Keeps a finished answer with its question's vector (in the index now, in the shared
    /// rows in the background).
    fn store(&self, partition: String, vector: Vec<f32>, response: &impl serde::Serialize) {
        let Ok(bytes) = serde_json::to_vec(response) else { return };
        if bytes.len() > MAX_ENTRY_BYTES {
            return;
        }
        let ttl = Duration::from_secs(self.config.ttl_secs.max(1));
        let now = now_ms();
        let expires_at_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let id = hex::encode(rand::random::<[u8; 16]>());
        let entry = Entry { id, partition, vector, response: Arc::new(bytes), expires_at_ms };
        self.index.insert(entry.clone(), now);
        if let Some(shared) = &self.shared {
            tokio::spawn(shared.put(entry, now));
        }
    }
}

/// A cached answer and how similar its question was.
struct Hit<A: Api> {
    response: A::Response,
    similarity: f32,
}

impl<A: Api> Hit<A> {
    fn read(neighbour: &Neighbour) -> Option<Self> {
        let response = serde_json::from_slice(&neighbour.response).ok()?;
        Some(Self { response, similarity: neighbour.similarity })
    }
}

/// Unix time in milliseconds (entries expire by it on every replica alike).
pub fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
