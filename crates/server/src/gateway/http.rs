//! The gateway's HTTP side: the auth middleware that turns a bearer key into a [`Caller`].

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sconce_gateway::Principal;

use crate::http::HttpError;
use crate::state::AppState;

/// Who called and when the request arrived, set by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub received: Instant,
    /// When authentication finished (the end of the `auth` stage in traces).
    pub authenticated: Instant,
}

/// Paths that stay open with auth on (probes; `/metrics` unless `metrics_auth`).
const OPEN_PATHS: &[&str] = &["/health", "/ready", "/version"];

/// Resolves the bearer key into a [`Caller`]; 401 in the OpenAI envelope when it fails.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let received = Instant::now();
    let Some(gateway) = state.gateway() else {
        return next.run(request).await;
    };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    if request.uri().path() == super::metrics::PATH {
        return match super::metrics::refuse_on_api_port(gateway, &request) {
            Some(refusal) => refusal,
            None => next.run(request).await,
        };
    }
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    match gateway.authenticate(header) {
        Ok(principal) => {
            request.extensions_mut().insert(Caller { principal, received, authenticated: Instant::now() });
            next.run(request).await
        }
        Err(error) => HttpError(error).into_response(),
    }
}
