//! The axum application: routes, fallbacks, body limit, `x-request-id` (taken from the
//! request or generated, echoed back) and request tracing.

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{delete, get, post, put};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::gateway::admin;
use crate::gateway::http as gateway_http;
use crate::gateway::prompts;
use crate::http::{method_not_allowed, route_not_found};
use crate::routes::{chat, completions, health, models};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Builds the whole HTTP API over `state`.
pub fn build_app(state: AppState) -> Router {
    let body_limit = state.settings().max_request_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{*id}", get(models::get_model))
        .route("/tokenize", post(models::tokenize))
        .route("/detokenize", post(models::detokenize))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/version", get(health::version))
        .route("/metrics", get(health::metrics))
        .route("/v1/usage", get(admin::usage))
        .route("/admin/keys", post(admin::create_key).get(admin::list_keys))
        .route("/admin/keys/{id}", delete(admin::revoke_key))
        .route("/admin/prompts", post(prompts::create).get(prompts::list))
        .route("/admin/prompts/{name}", get(prompts::show))
        .route("/admin/prompts/{name}/labels/{label}", put(prompts::set_label).delete(prompts::delete_label))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), gateway_http::authenticate))
        .layer(DefaultBodyLimit::max(body_limit))
        // Outermost last: set the id, then trace with it, then echo it back.
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(REQUEST_ID_HEADER)))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        .layer(SetRequestIdLayer::new(HeaderName::from_static(REQUEST_ID_HEADER), MakeRequestUuid))
        .with_state(state)
}

/// Every log line of a request carries its `x-request-id`.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id)
}
