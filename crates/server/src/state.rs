//! Shared server state: the engine once loaded, metrics, readiness and in-flight tracking.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use sconce_protocol::ApiError;
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::gateway::GatewayHandle;
use crate::metrics::Metrics;

/// Settings the HTTP layer needs, fixed at startup.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub max_request_body_bytes: usize,
    pub vllm_compat_metrics: bool,
    /// Extra names accepted as `model` (e.g. the path the model was loaded from).
    pub model_aliases: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { max_request_body_bytes: 8 << 20, vllm_compat_metrics: false, model_aliases: Vec::new() }
    }
}

struct Loaded {
    backend: Backend,
    metrics: Metrics,
}

struct Shared {
    settings: ServerSettings,
    loaded: OnceLock<Loaded>,
    gateway: OnceLock<GatewayHandle>,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    started: u64,
}

#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    pub fn new(settings: ServerSettings) -> Self {
        let shared = Shared {
            settings,
            loaded: OnceLock::new(),
            gateway: OnceLock::new(),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            started: unix_now(),
        };
        Self { shared: Arc::new(shared) }
    }

    /// Makes the model available; `/ready` turns 200. Only the first call counts.
    pub fn set_backend(&self, backend: Backend) -> anyhow::Result<()> {
        let name = backend.info().name.clone();
        let metrics = Metrics::new(&name, self.shared.settings.vllm_compat_metrics)?;
        if self.shared.loaded.set(Loaded { backend, metrics }).is_err() {
            anyhow::bail!("the model is already loaded");
        }
        Ok(())
    }

    /// Turns the ops layer on; only the first call counts.
    pub fn set_gateway(&self, gateway: GatewayHandle) {
        let _ = self.shared.gateway.set(gateway);
    }

    pub fn gateway(&self) -> Option<&GatewayHandle> {
        self.shared.gateway.get()
    }

    /// A handle that does not keep the state alive (for the gateway's innermost backend).
    pub fn downgrade(&self) -> WeakAppState {
        WeakAppState(Arc::downgrade(&self.shared))
    }

    pub fn backend(&self) -> Option<&Backend> {
        self.shared.loaded.get().map(|loaded| &loaded.backend)
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.shared.loaded.get().map(|loaded| &loaded.metrics)
    }

    pub fn settings(&self) -> &ServerSettings {
        &self.shared.settings
    }

    /// Unix time the server started (the models' `created`).
    pub fn started(&self) -> u64 {
        self.shared.started
    }

    pub fn is_ready(&self) -> bool {
        self.shared.loaded.get().is_some() && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Refuses new generation work from now on; `/ready` turns 503.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
    }

    /// The backend, for work that is about to start, or 503.
    pub fn serving_backend(&self) -> Result<&Backend, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        self.backend().ok_or_else(|| ApiError::unavailable("the model is still loading"))
    }

    /// Accepts `model` when absent or when it names the served model.
    pub fn check_model(&self, backend: &Backend, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None => Ok(()),
            Some(name) if name == backend.info().name => Ok(()),
            Some(name) if self.shared.settings.model_aliases.iter().any(|alias| alias == name) => Ok(()),
            Some(name) => Err(ApiError::model_not_found(name)),
        }
    }

    /// Counts one generation request until the guard drops.
    pub fn track_request(&self) -> InFlightGuard {
        self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard { shared: self.shared.clone() }
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no generation request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Clone)]
pub struct WeakAppState(Weak<Shared>);

impl WeakAppState {
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|shared| AppState { shared })
    }
}

/// Keeps a request counted as in flight while alive.
pub struct InFlightGuard {
    shared: Arc<Shared>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.shared.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
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
        let guard = state.track_request();
        let waiter = tokio::spawn({
            let state = state.clone();
            async move { state.wait_idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }

    #[test]
    fn draining_state_is_not_ready() {
        let state = AppState::new(ServerSettings::default());
        assert!(!state.is_ready());
        state.begin_drain();
        assert_eq!(state.serving_backend().err().map(|e| e.status), Some(503));
    }
}
