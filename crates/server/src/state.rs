//! Shared server state: the engine slot, the gateway when on, and the pipeline every
//! endpoint's calls enter.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sconce_gateway::{Gateway, Pipeline};
use sconce_protocol::{ApiError, RequestLimits};

use crate::backend::Backend;
use crate::conn::HttpLimits;
use crate::embed::EmbeddingService;
use crate::local::serving::Serving;
use crate::local::LocalEngine;
use crate::metrics::Metrics;

/// Settings the HTTP layer needs, fixed at startup.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_request_body_bytes: usize,
    pub vllm_compat_metrics: bool,
    /// Extra names accepted as `model` (e.g. the path the model was loaded from).
    pub model_aliases: Vec<String>,
    /// How much one request may ask for (`[limits]`).
    pub limits: RequestLimits,
    pub http: HttpLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 8 << 20,
            vllm_compat_metrics: false,
            model_aliases: Vec::new(),
            limits: RequestLimits::default(),
            http: HttpLimits::default(),
        }
    }
}

/// The gateway and the stages it built over the local engine.
struct GatewayParts {
    gateway: Arc<Gateway>,
    pipeline: Pipeline,
}

struct Shared {
    settings: ServerSettings,
    serving: Arc<Serving>,
    /// No stages: the pipeline while the gateway is off.
    bare: Pipeline,
    gateway: OnceLock<GatewayParts>,
    started: u64,
}

#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    pub fn new(settings: ServerSettings) -> Self {
        let serving =
            Serving::new(settings.model_aliases.clone(), settings.vllm_compat_metrics, settings.limits.clone());
        let bare = Pipeline::new(Vec::new(), Arc::new(LocalEngine::new(serving.clone())));
        let shared = Shared { settings, serving, bare, gateway: OnceLock::new(), started: unix_now() };
        Self { shared: Arc::new(shared) }
    }

    /// Makes the model available; `/ready` turns 200. Only the first call counts.
    pub fn set_backend(&self, backend: Backend) -> anyhow::Result<()> {
        if let Some(gateway) = self.gateway() {
            gateway.set_local_model(&backend.info().name, self.shared.serving.model_aliases());
        }
        self.shared.serving.set_backend(backend)
    }

    /// Makes the embedding models available. Only the first call counts.
    pub fn set_embeddings(&self, service: Arc<EmbeddingService>) -> anyhow::Result<()> {
        self.shared.serving.set_embeddings(service)
    }

    pub fn embeddings(&self) -> Option<Arc<EmbeddingService>> {
        self.shared.serving.embeddings()
    }

    /// Turns the gateway on: its stages over the local engine. Only the first call counts.
    pub fn set_gateway(&self, gateway: Arc<Gateway>) -> anyhow::Result<()> {
        let pipeline = gateway.pipeline(Arc::new(self.local_engine()))?;
        if let Some(backend) = self.backend() {
            gateway.set_local_model(&backend.info().name, self.shared.serving.model_aliases());
        }
        let _ = self.shared.gateway.set(GatewayParts { gateway, pipeline });
        Ok(())
    }

    pub fn gateway(&self) -> Option<&Arc<Gateway>> {
        self.shared.gateway.get().map(|parts| &parts.gateway)
    }

    /// Where every endpoint's calls go: the gateway's stages, or none.
    pub fn pipeline(&self) -> &Pipeline {
        self.shared.gateway.get().map_or(&self.shared.bare, |parts| &parts.pipeline)
    }

    /// The local engine as an upstream (the innermost backend).
    pub fn local_engine(&self) -> LocalEngine {
        LocalEngine::new(self.shared.serving.clone())
    }

    pub fn backend(&self) -> Option<&Backend> {
        self.shared.serving.loaded().map(|loaded| &loaded.backend)
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.shared.serving.metrics()
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.shared.settings
    }

    /// Unix time the server started (the models' `created`).
    pub fn started(&self) -> u64 {
        self.shared.started
    }

    pub fn is_ready(&self) -> bool {
        self.backend().is_some() && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.shared.serving.is_draining()
    }

    /// Refuses new generation work from now on; `/ready` turns 503.
    pub fn begin_drain(&self) {
        self.shared.serving.begin_drain();
    }

    /// The backend, for work that is about to start, or 503.
    pub fn serving_backend(&self) -> Result<&Backend, ApiError> {
        self.shared.serving.serving().map(|loaded| &loaded.backend)
    }

    /// Accepts `model` when absent or when it names the served model.
    pub fn check_model(&self, backend: &Backend, model: Option<&str>) -> Result<(), ApiError> {
        self.shared.serving.check_model(backend, model)
    }

    pub fn in_flight(&self) -> usize {
        self.shared.serving.in_flight()
    }

    /// Resolves once no generation request is in flight.
    pub async fn wait_idle(&self) {
        self.shared.serving.wait_idle().await;
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_guard_drops() {
        let state = AppState::new(ServerSettings::default());
        let guard = state.shared.serving.track("r1").unwrap();
        assert_eq!(state.shared.serving.track("r1").err().map(|e| e.status), Some(409));
        let waiter = tokio::spawn({
            let state = state.clone();
            async move { state.wait_idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert!(state.shared.serving.track("r1").is_ok(), "the id is free again");
    }

    #[test]
    fn draining_state_is_not_ready() {
        let state = AppState::new(ServerSettings::default());
        assert!(!state.is_ready());
        state.begin_drain();
        assert_eq!(state.serving_backend().err().map(|e| e.status), Some(503));
    }
}
