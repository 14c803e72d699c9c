//! Probes and service endpoints: `/health`, `/ready`, `/version` and `/metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sconce_protocol::ApiError;
use serde_json::{json, Value};

use crate::backend::{Backend, EngineState};
use crate::http::HttpError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// Liveness: the process answers and its engine has not failed.
pub async fn health(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    check_engine(&state)?;
    Ok(Json(json!({"status": "ok"})))
}

/// 503 once the engine thread has failed (it panicked), so the orchestrator restarts the pod.
fn check_engine(state: &AppState) -> Result<(), HttpError> {
    match state.backend().map(Backend::state) {
        Some(EngineState::Failed(reason)) => Err(ApiError::unavailable(format!("the engine failed: {reason}")).into()),
        _ => Ok(()),
    }
}

/// Readiness: the model is loaded, its engine has not failed and the server is not draining.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, HttpError> {
    check_engine(&state)?;
    if state.is_draining() {
        return Err(ApiError::unavailable("the server is shutting down").into());
    }
    if !state.is_ready() {
        return Err(ApiError::unavailable("the model is still loading").into());
    }
    Ok(Json(with_shared_state(json!({"status": "ready"}), &state)))
}

/// With Redis configured, `shared_state` says whether it answers ("ok" or "unreachable"). A
/// Redis outage hits every replica alike, so it does not take this one out of rotation; the
/// budget checks follow `on_shared_state_error` meanwhile.
fn with_shared_state(mut body: Value, state: &AppState) -> Value {
    if let Some(up) = state.gateway().and_then(|gateway| gateway.shared_state_up()) {
        body["shared_state"] = json!(if up { "ok" } else { "unreachable" });
    }
    body
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, HttpError> {
    let text = match (state.metrics(), state.backend()) {
        (Some(metrics), Some(backend)) => {
            let text = metrics.render(&backend.stats()).map_err(|e| ApiError::internal(e.to_string()))?;
            text + &crate::metrics_constraints::render(&backend.constraint_stats(), &backend.info().name)
        }
        _ => String::new(),
    };
    let text = match state.embeddings() {
        Some(service) => text + &service.metrics().render().map_err(|e| ApiError::internal(e.to_string()))?,
        None => text,
    };
    let text = match state.gateway() {
        Some(gateway) => text + &gateway.render_metrics().map_err(|e| ApiError::internal(e.to_string()))?,
        None => text,
    };
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}
