//! `/metrics` with the gateway on: on the API port, or on its own listener
//! (`metrics_listen`) and then not on the API port; open, or for the admin key only
//! (`metrics_auth`).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sconce_gateway::auth::require_admin;
use sconce_gateway::Gateway;
use sconce_protocol::ApiError;
use tokio::net::TcpListener;

use crate::http::HttpError;
use crate::routes::health;
use crate::state::AppState;

pub const PATH: &str = "/metrics";

/// The API port's answer to `/metrics` when it must not serve it: 404 while it has its own
/// listener, 401/403 without the admin key under `metrics_auth`.
pub(super) fn refuse_on_api_port(gateway: &Gateway, request: &Request) -> Option<Response> {
    if gateway.config().metrics_listen.is_some() {
        let error = ApiError::route_not_found(request.method().as_str(), PATH);
        return Some(HttpError(error).into_response());
    }
    refuse_without_admin(gateway, request)
}

/// 401/403 unless the request carries the admin key, when `metrics_auth` is on.
fn refuse_without_admin(gateway: &Gateway, request: &Request) -> Option<Response> {
    if !gateway.config().metrics_auth {
        return None;
    }
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    let checked = gateway.authenticate(header).and_then(|principal| require_admin(&principal));
    checked.err().map(|error| HttpError(error).into_response())
}

async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let refusal = state.gateway().and_then(|gateway| refuse_without_admin(gateway, &request));
    match refusal {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// Serves `/metrics` alone on `[gateway] metrics_listen`, when set, until the process ends.
pub async fn listen(state: &AppState) -> anyhow::Result<()> {
    let Some(address) = state.gateway().and_then(|gateway| gateway.config().metrics_listen.clone()) else {
        return Ok(());
    };
    let listener = TcpListener::bind(address.as_str())
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen for /metrics on {address}: {error}"))?;
    tracing::info!("metrics on http://{}{PATH}", listener.local_addr()?);
    let app = Router::new()
        .route(PATH, get(health::metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the metrics listener stopped");
        }
    });
    Ok(())
}
