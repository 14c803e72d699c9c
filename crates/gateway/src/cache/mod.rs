//! The response cache: exact match on the canonical request, deterministic requests only
//! (unless configured), honouring `Cache-Control`, never storing errors or partial answers.

pub mod key;
pub mod replay;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::api::{Api, Backend, Call, CallResult, Outcome, Reply, Service};
use crate::endpoint::{ApiReply, ApiRequest};
use crate::error::GatewayError;
use replay::{collect_into, hit, is_complete};
use store::{CacheStore, MemoryStore, RedisStore};

pub const CACHE_HEADER: &str = "x-sconce-cache";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackendKind {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    pub backend: CacheBackendKind,
    /// `redis://host:port/db`, for `backend = "redis"`.
    pub redis_url: Option<String>,
    pub ttl_secs: u64,
    /// Bound of the in-process cache, in bytes.
    pub max_bytes: u64,
    /// Larger answers are not cached.
    pub max_entry_bytes: usize,
    /// Also cache requests that sample (temperature > 0 and no seed).
    pub cache_nondeterministic: bool,
    /// Key prefix, e.g. to separate deployments sharing one Redis.
    pub namespace: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            backend: CacheBackendKind::Memory,
            redis_url: None,
            ttl_secs: 3600,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            cache_nondeterministic: false,
            namespace: "sconce:cache:".into(),
        }
    }
}

/// `sconce:cache_hits_total` and `sconce:cache_misses_total`.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    /// Bounds the `model` label (a client's unknown name counts as `other`).
    names: std::sync::Arc<crate::names::ModelNames>,
}

impl CacheMetrics {
    pub fn new(registry: &Registry, names: std::sync::Arc<crate::names::ModelNames>) -> prometheus::Result<Self> {
        let hits = IntCounterVec::new(Opts::new("sconce:cache_hits_total", "Response cache hits."), &["model"])?;
        let misses = IntCounterVec::new(Opts::new("sconce:cache_misses_total", "Response cache misses."), &["model"])?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        Ok(Self { hits, misses, names })
    }
}

pub struct ResponseCache {
    config: CacheConfig,
    store: Arc<dyn CacheStore>,
    metrics: Option<CacheMetrics>,
}

impl ResponseCache {
    pub fn new(config: CacheConfig, metrics: Option<CacheMetrics>) -> Result<Self, GatewayError> {
        let ttl = Duration::from_secs(config.ttl_secs.max(1));
        let store: Arc<dyn CacheStore> = match config.backend {
            CacheBackendKind::Memory => Arc::new(MemoryStore::new(config.max_bytes, ttl)),
            CacheBackendKind::Redis => {
                let url = config
                    .redis_url
                    .as_deref()
                    .ok_or_else(|| GatewayError::config("cache backend `redis` needs `redis_url`"))?;
                Arc::new(RedisStore::new(url, ttl)?)
            }
        };
        Ok(Self { config, store, metrics })
    }

    fn count(&self, hit: bool, model: &str) {
        if let Some(metrics) = &self.metrics {
            let counter = if hit { &metrics.hits } else { &metrics.misses };
            counter.with_label_values(&[metrics.names.label(model)]).inc();
        }
    }

    async fn lookup<R: ApiReply>(&self, key: &str) -> Option<R> {
        let bytes = self.store.get(key.to_string()).await?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a finished answer in the background (never one cut short or too large).
    fn store<R: ApiReply>(&self, key: String, response: &R) {
        if !is_complete(response) {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(response) else { return };
        if bytes.len() <= self.config.max_entry_bytes {
            tokio::spawn(self.store.put(key, bytes));
        }
    }
}

/// The cache stage over one endpoint's inner stages.
pub struct CachedStage<A: Api> {
    cache: Arc<ResponseCache>,
    inner: Service<A>,
}

impl<A: Api> CachedStage<A> {
    pub fn new(cache: Arc<ResponseCache>, inner: Service<A>) -> Self {
        Self { cache, inner }
    }
}

impl<A: Api> Backend<A> for CachedStage<A> {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        Box::pin(cached_call(self.cache.clone(), self.inner.clone(), call))
    }
}

async fn cached_call<A: Api>(cache: Arc<ResponseCache>, inner: Service<A>, call: Call<A>) -> CallResult<A> {
    let cacheable = cache.config.cache_nondeterministic || call.request.is_deterministic();
    if !cacheable {
        return inner.call(call).await.map(marked_miss);
    }
    let model = call.request.model().unwrap_or_default().to_string();
    let prompt = call.ctx.prompt.as_ref().map(ToString::to_string);
    let key = format!("{}{}", cache.config.namespace, key::cache_key::<A>(&call.request, &model, prompt.as_deref()));
    if !call.ctx.hints.no_cache {
        if let Some(found) = cache.lookup::<A::Response>(&key).await {
            cache.count(true, &model);
            let reply = hit::<A>(found, &call.ctx.request_id, call.request.is_stream());
            return Ok(Outcome::new(reply).with_header("x-sconce-model", model).with_header(CACHE_HEADER, "hit"));
        }
    }
    cache.count(false, &model);
    let no_store = call.ctx.hints.no_store;
    let outcome = inner.call(call).await?;
    if no_store || is_semantic_hit(&outcome) {
        return Ok(marked_miss(outcome));
    }
    Ok(marked_miss(fill(cache, key, outcome)))
}

/// Says `miss`, unless an inner stage (the semantic cache) already said what it was.
fn marked_miss<A: Api>(outcome: Outcome<A>) -> Outcome<A> {
    if outcome.headers.iter().any(|(name, _)| *name == CACHE_HEADER) {
        return outcome;
    }
    outcome.with_header(CACHE_HEADER, "miss")
}

/// A semantic hit answered another question: never stored under this request's exact key
/// (the exact cache is not partitioned by team).
fn is_semantic_hit<A: Api>(outcome: &Outcome<A>) -> bool {
    outcome.headers.iter().any(|(name, value)| *name == CACHE_HEADER && value == crate::semantic::SEMANTIC_HIT)
}

/// Stores full answers now, and streams once they end complete (never when cut short).
fn fill<A: Api>(cache: Arc<ResponseCache>, key: String, outcome: Outcome<A>) -> Outcome<A> {
    let Outcome { reply, headers } = outcome;
    let reply = match reply {
        Reply::Full(response) => {
            cache.store(key, response.as_ref());
            Reply::Full(response)
        }
        Reply::Stream(stream) => Reply::Stream(collect_into::<A>(stream, move |response| cache.store(key, &response))),
    };
    Outcome { reply, headers }
}

#[cfg(test)]
mod tests;
