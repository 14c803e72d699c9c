//! The response cache: exact match on the canonical request, deterministic requests only
//! (unless configured), honouring `Cache-Control`, never storing errors or partial answers.

pub mod key;
pub mod replay;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use prometheus::{IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use crate::{ChatBackend, ChatCall, ChatOutcome, ChatReply, ChatResult, Layer, SharedBackend};
use replay::{CachedReply, Collector};
use store::{CacheStore, MemoryStore, RedisStore};

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

pub(crate) fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// `sconce:cache_hits_total` and `sconce:cache_misses_total`.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
}

impl CacheMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let hits = IntCounterVec::new(Opts::new("sconce:cache_hits_total", "Response cache hits."), &["model"])?;
        let misses = IntCounterVec::new(Opts::new("sconce:cache_misses_total", "Response cache misses."), &["model"])?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        Ok(Self { hits, misses })
    }
}

pub struct ResponseCache {
    config: CacheConfig,
    store: Arc<dyn CacheStore>,
    metrics: Option<CacheMetrics>,
}

impl ResponseCache {
    pub fn new(config: CacheConfig, metrics: Option<CacheMetrics>) -> Result<Self, String> {
        let ttl = Duration::from_secs(config.ttl_secs.max(1));
        let store: Arc<dyn CacheStore> = match config.backend {
            CacheBackendKind::Memory => Arc::new(MemoryStore::new(config.max_bytes, ttl)),
            CacheBackendKind::Redis => {
                let url = config.redis_url.as_deref().ok_or("cache backend `redis` needs `redis_url`")?;
                Arc::new(RedisStore::new(url, ttl)?)
            }
        };
        Ok(Self { config, store, metrics })
    }

    fn count(&self, hit: bool, model: &str) {
        if let Some(metrics) = &self.metrics {
            let counter = if hit { &metrics.hits } else { &metrics.misses };
            counter.with_label_values(&[model]).inc();
        }
    }
}

/// Wraps a backend with the cache.
pub struct CacheLayer(pub Arc<ResponseCache>);

impl Layer for CacheLayer {
    fn layer(&self, inner: SharedBackend) -> SharedBackend {
        Arc::new(CachedBackend { cache: self.0.clone(), inner })
    }
}

struct CachedBackend {
    cache: Arc<ResponseCache>,
    inner: SharedBackend,
}

impl ChatBackend for CachedBackend {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        let (cache, inner) = (self.cache.clone(), self.inner.clone());
        Box::pin(cached_chat(cache, inner, call))
    }
}

fn with_header(mut outcome: ChatOutcome, value: &str) -> ChatOutcome {
    outcome.headers.push(("x-sconce-cache", value.to_string()));
    outcome
}

async fn cached_chat(cache: Arc<ResponseCache>, inner: SharedBackend, call: ChatCall) -> ChatResult {
    let cacheable = cache.config.cache_nondeterministic || key::is_deterministic(&call.request);
    if !cacheable {
        return inner.chat(call).await.map(|o| with_header(o, "miss"));
    }
    let model = call.request.model.clone().unwrap_or_default();
    let prompt = call.ctx.marks.prompt.get().map(ToString::to_string);
    let key = format!("{}{}", cache.config.namespace, key::cache_key(&call.request, &model, prompt.as_deref()));
    let stream = call.request.sampling.is_stream();
    if !call.ctx.hints.no_cache {
        if let Some(hit) = lookup(&cache, &key).await {
            cache.count(true, &model);
            let reply =
                if stream { ChatReply::Stream(hit.replay()) } else { ChatReply::Full(Box::new(hit.hit_response())) };
            let mut outcome = ChatOutcome::new(reply);
            outcome.headers.push(("x-sconce-model", model));
            return Ok(with_header(outcome, "hit"));
        }
    }
    cache.count(false, &model);
    let no_store = call.ctx.hints.no_store;
    let outcome = inner.chat(call).await?;
    if no_store {
        return Ok(with_header(outcome, "miss"));
    }
    Ok(with_header(fill(cache, key, outcome), "miss"))
}

async fn lookup(cache: &ResponseCache, key: &str) -> Option<CachedReply> {
    let bytes = cache.store.get(key.to_string()).await?;
    serde_json::from_slice(&bytes).ok()
}

fn store(cache: &Arc<ResponseCache>, key: String, entry: &CachedReply) {
    let Ok(bytes) = serde_json::to_vec(entry) else { return };
    if bytes.len() > cache.config.max_entry_bytes {
        return;
    }
    let write = cache.store.put(key, bytes);
    tokio::spawn(write);
}

/// Stores full answers now, and streams once they end complete (never when cut short).
fn fill(cache: Arc<ResponseCache>, key: String, outcome: ChatOutcome) -> ChatOutcome {
    let ChatOutcome { reply, headers } = outcome;
    let reply = match reply {
        ChatReply::Full(response) => {
            if let Some(entry) = CachedReply::from_full((*response).clone()) {
                store(&cache, key, &entry);
            }
            ChatReply::Full(response)
        }
        ChatReply::Stream(stream) => ChatReply::Stream(collect_into(cache, key, stream)),
    };
    ChatOutcome { reply, headers }
}

fn collect_into(cache: Arc<ResponseCache>, key: String, stream: crate::ChunkStream) -> crate::ChunkStream {
    let mut collector = Some(Collector::default());
    let items = stream.map(Some).chain(futures_util::stream::once(async { None }));
    items
        .filter_map(move |item| {
            let out = match item {
                Some(Ok(chunk)) => {
                    if let Some(c) = collector.as_mut() {
                        c.observe(&chunk);
                    }
                    Some(Ok(chunk))
                }
                Some(Err(error)) => {
                    collector = None;
                    Some(Err(error))
                }
                None => {
                    if let Some(entry) = collector.take().and_then(Collector::finish) {
                        store(&cache, key.clone(), &entry);
                    }
                    None
                }
            };
            futures_util::future::ready(out)
        })
        .boxed()
}

#[cfg(test)]
mod tests;
