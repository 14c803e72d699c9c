//! The engine slot the local adapter serves from: the model once loaded, its metrics,
//! draining, and the generation requests in flight (by id).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sconce_protocol::{ApiError, RequestLimits};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::embed::EmbeddingService;
use crate::metrics::Metrics;

pub struct Loaded {
    pub backend: Backend,
    pub metrics: Metrics,
}

/// Shared by the HTTP state and the local engine adapter.
pub struct Serving {
    /// Extra names accepted as `model` (e.g. the path the model was loaded from).
    model_aliases: Vec<String>,
    vllm_compat_metrics: bool,
    limits: RequestLimits,
    loaded: OnceLock<Loaded>,
    /// The embedding models, once loaded (none configured: never set).
    embeddings: OnceLock<Arc<EmbeddingService>>,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    /// Ids of the requests generating now: a client's `x-request-id` may not run twice at once.
    ids: Mutex<HashSet<String>>,
    idle: Notify,
}

impl Serving {
    pub fn new(model_aliases: Vec<String>, vllm_compat_metrics: bool, limits: RequestLimits) -> Arc<Self> {
        Arc::new(Self {
            model_aliases,
            vllm_compat_metrics,
            limits,
            loaded: OnceLock::new(),
            embeddings: OnceLock::new(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            ids: Mutex::default(),
            idle: Notify::new(),
        })
    }

    /// Makes the model available; only the first call counts.
    pub fn set_backend(&self, backend: Backend) -> anyhow::Result<()> {
        let name = backend.info().name.clone();
        let metrics = Metrics::new(&name, self.vllm_compat_metrics)?;
        if self.loaded.set(Loaded { backend, metrics }).is_err() {
            anyhow::bail!("the model is already loaded");
        }
        Ok(())
    }

    /// Makes the embedding models available; only the first call counts.
    pub fn set_embeddings(&self, service: Arc<EmbeddingService>) -> anyhow::Result<()> {
        if self.embeddings.set(service).is_err() {
            anyhow::bail!("the embedding models are already loaded");
        }
        Ok(())
    }

    pub fn embeddings(&self) -> Option<Arc<EmbeddingService>> {
        self.embeddings.get().cloned()
    }

    /// How much one request may ask for.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }

    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.loaded.get().map(|loaded| &loaded.metrics)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The loaded model, for work that is about to start, or 503.
    pub fn serving(&self) -> Result<&Loaded, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.loaded.get().ok_or_else(|| ApiError::unavailable("the model is still loading"))
    }

    /// Accepts `model` when absent or when it names the served model.
    pub fn check_model(&self, backend: &Backend, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None => Ok(()),
            Some(name) if name == backend.info().name => Ok(()),
            Some(name) if self.model_aliases.iter().any(|alias| alias == name) => Ok(()),
            Some(name) if self.embeddings().is_some_and(|service| service.find(Some(name)).is_some()) => {
                let message = format!("`{name}` is an embedding model: send it to POST /v1/embeddings");
                Err(ApiError::invalid_param("model", message))
            }
            Some(name) => Err(ApiError::model_not_found(name)),
        }
    }

    pub fn model_aliases(&self) -> &[String] {
        &self.model_aliases
    }

    /// Counts one generation request, under its id, until the guard drops; 409 while
    /// another request with the same id is generating.
    pub fn track(self: &Arc<Self>, id: &str) -> Result<InFlightGuard, ApiError> {
        if !self.ids.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_string()) {
            return Err(
                ApiError::conflict(format!("a request with id `{id}` is already running")).with_param("x-request-id")
            );
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlightGuard { serving: self.clone(), id: id.to_string() })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no generation request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Keeps a request counted as in flight while alive.
pub struct InFlightGuard {
    serving: Arc<Serving>,
    id: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.serving.ids.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        if self.serving.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.serving.idle.notify_waiters();
        }
    }
}
