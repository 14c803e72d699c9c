//! Part 2 of the ops layer: guardrails and the response cache as stages, and the router
//! (local engine plus remote upstreams) as the innermost backend.

use std::sync::Arc;

use axum::http::HeaderMap;
use prometheus::Registry;
use sconce_gateway::cache::{CacheLayer, CacheMetrics, ResponseCache};
use sconce_gateway::config::GatewayConfig;
use sconce_gateway::guard::metrics::GuardMetrics;
use sconce_gateway::guard::{GuardLayer, Guardrails};
use sconce_gateway::route::metrics::RouteMetrics;
use sconce_gateway::route::{DeploymentConfig, RequestHints, Router};
use sconce_gateway::{SharedBackend, Stack};

/// Guardrails (outer) then the cache, under the part-1 stages.
pub fn push(mut stack: Stack, config: &GatewayConfig, registry: &Registry) -> Result<Stack, String> {
    if !config.guardrails.policies.is_empty() {
        let guardrails = Arc::new(Guardrails::new(&config.guardrails)?);
        let metrics = GuardMetrics::new(registry).ok();
        stack = stack.push(GuardLayer { guardrails, metrics });
    }
    if config.cache.enabled {
        let cache = ResponseCache::new(config.cache.clone(), CacheMetrics::new(registry).ok())?;
        stack = stack.push(CacheLayer(Arc::new(cache)));
    }
    Ok(stack)
}

/// The router over the configured groups, or the local engine alone.
pub fn innermost(config: &GatewayConfig, local: SharedBackend, registry: &Registry) -> Result<SharedBackend, String> {
    if config.routing.groups.is_empty() {
        return Ok(local);
    }
    let pick = |_: &DeploymentConfig| Some(local.clone());
    let router = Router::new(config.routing.clone(), &pick, RouteMetrics::new(registry).ok())?;
    router.pass_unknown_names_to(local);
    Ok(sconce_gateway::telemetry::timed("route", Arc::new(router)))
}

/// `x-sconce-tier` and `Cache-Control`.
pub fn hints(headers: &HeaderMap) -> RequestHints {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hints = RequestHints { tier: text("x-sconce-tier").map(str::to_string), ..RequestHints::default() };
    match text("cache-control") {
        Some(value) => hints.with_cache_control(value),
        None => hints,
    }
}
