//! The axum application: the route table, fallbacks, body limit, the request id and
//! request tracing.

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower::util::MapRequestLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::gateway::http as gateway_http;
use crate::gateway::{admin, prompts};
use crate::http::{method_not_allowed, route_not_found};
use crate::request_id;
use crate::routes::{chat, completions, embeddings, health, models};
use crate::state::AppState;

pub use crate::request_id::REQUEST_ID_HEADER;

/// What a route does, so tests can check each kind (inference routes must run through
/// the pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Generates through the pipeline's stages.
    Inference,
    /// Reads the model or its tokenizer; never generates.
    Model,
    /// Probes and metrics.
    Service,
    /// Keys, prompts and usage (the gateway's admin API).
    Admin,
}

/// One route: method, path, kind.
pub type RouteEntry = (Method, &'static str, RouteKind);

/// Every route the server answers.
pub fn routes() -> Vec<RouteEntry> {
    use RouteKind::{Admin, Inference, Model, Service};
    vec![
        (Method::POST, "/v1/chat/completions", Inference),
        (Method::POST, "/v1/completions", Inference),
        (Method::POST, "/v1/embeddings", Inference),
        (Method::GET, "/v1/models", Model),
        (Method::GET, "/v1/models/{*id}", Model),
        (Method::POST, "/tokenize", Model),
        (Method::POST, "/detokenize", Model),
        (Method::GET, "/health", Service),
        (Method::GET, "/ready", Service),
        (Method::GET, "/version", Service),
        (Method::GET, "/metrics", Service),
        (Method::GET, "/v1/usage", Admin),
        (Method::POST, "/admin/keys", Admin),
        (Method::GET, "/admin/keys", Admin),
        (Method::DELETE, "/admin/keys/{id}", Admin),
        (Method::POST, "/admin/prompts", Admin),
        (Method::GET, "/admin/prompts", Admin),
        (Method::GET, "/admin/prompts/{name}", Admin),
        (Method::PUT, "/admin/prompts/{name}/labels/{label}", Admin),
        (Method::DELETE, "/admin/prompts/{name}/labels/{label}", Admin),
    ]
}

/// The handler of one route in [`routes`].
fn handler(method: &Method, path: &str) -> Option<MethodRouter<AppState>> {
    let filter = MethodFilter::try_from(method.clone()).ok()?;
    Some(match (method.as_str(), path) {
        ("POST", "/v1/chat/completions") => on(filter, chat::chat_completions),
        ("POST", "/v1/completions") => on(filter, completions::completions),
        ("POST", "/v1/embeddings") => on(filter, embeddings::embeddings),
        ("GET", "/v1/models") => on(filter, models::list_models),
        ("GET", "/v1/models/{*id}") => on(filter, models::get_model),
        ("POST", "/tokenize") => on(filter, models::tokenize),
        ("POST", "/detokenize") => on(filter, models::detokenize),
        ("GET", "/health") => on(filter, health::health),
        ("GET", "/ready") => on(filter, health::ready),
        ("GET", "/version") => on(filter, health::version),
        ("GET", "/metrics") => on(filter, health::metrics),
        ("GET", "/v1/usage") => on(filter, admin::usage),
        ("POST", "/admin/keys") => on(filter, admin::create_key),
        ("GET", "/admin/keys") => on(filter, admin::list_keys),
        ("DELETE", "/admin/keys/{id}") => on(filter, admin::revoke_key),
        ("POST", "/admin/prompts") => on(filter, prompts::create),
        ("GET", "/admin/prompts") => on(filter, prompts::list),
        ("GET", "/admin/prompts/{name}") => on(filter, prompts::show),
        ("PUT", "/admin/prompts/{name}/labels/{label}") => on(filter, prompts::set_label),
        ("DELETE", "/admin/prompts/{name}/labels/{label}") => on(filter, prompts::delete_label),
        _ => return None,
    })
}

/// Builds the whole HTTP API over `state`, from [`routes`].
pub fn build_app(state: AppState) -> Router {
    let body_limit = state.settings().max_request_body_bytes;
    let mut router = Router::new();
    for (method, path, _) in routes() {
        if let Some(route) = handler(&method, path) {
            router = router.route(path, route);
        }
    }
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gateway_http::authenticate))
        .layer(DefaultBodyLimit::max(body_limit))
        // Outermost last: drop an invalid client id, make one where missing, trace with it,
        // echo it back.
        .layer(PropagateRequestIdLayer::new(request_id::header_name()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(SetRequestIdLayer::new(request_id::header_name(), request_id::NewId))
        .layer(MapRequestLayer::new(request_id::drop_invalid::<axum::body::Body>))
        .with_state(state)
}

/// Every log line of a request carries its `x-request-id`.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_route_has_a_handler() {
        for (method, path, _) in routes() {
            assert!(handler(&method, path).is_some(), "{method} {path} has no handler");
        }
    }
}
