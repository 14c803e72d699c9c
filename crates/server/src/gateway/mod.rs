//! Turns the `sconce-gateway` stages on for the server: opening the gateway, the auth
//! middleware, and the admin (keys, prompts) and usage routes.

use std::sync::Arc;

use sconce_gateway::Gateway;

use crate::state::AppState;

pub mod admin;
pub mod http;
pub mod metrics;
pub mod prompts;
pub mod semantic;

/// Opens the gateway (when `[gateway] enabled`) and installs its stages on `state`.
pub async fn install(state: &AppState, config: &sconce_gateway::config::GatewayConfig) -> anyhow::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    install_with_admin(state, config, config.admin_key()).await
}

/// Like [`install`], with the admin key given (tests, embedders).
pub async fn install_with_admin(
    state: &AppState,
    config: &sconce_gateway::config::GatewayConfig,
    admin_key: Option<String>,
) -> anyhow::Result<()> {
    config.check_admin_key(admin_key.as_deref())?;
    let gateway: Arc<Gateway> = Gateway::open(config.clone(), admin_key).await?;
    let embedder = semantic::ServedEmbedder::new(state.clone(), config.semantic_cache.embedding_model.clone());
    gateway.set_embedder(embedder).await?;
    if admin_key_missing(config, &gateway) {
        tracing::warn!(variable = config.admin_key_variable(), "no admin key: the admin endpoints are closed");
    }
    state.set_gateway(gateway.clone())?;
    let stages: Vec<&str> =
        state.pipeline().stages(sconce_gateway::Endpoint::Chat).iter().map(|stage| stage.as_str()).collect();
    let database = redacted(&config.resolved_database_url());
    tracing::info!(auth = ?gateway.auth_mode(), %database, stages = ?stages, "gateway on");
    Ok(())
}

fn admin_key_missing(config: &sconce_gateway::config::GatewayConfig, gateway: &Gateway) -> bool {
    gateway.auth_mode() == sconce_gateway::config::AuthMode::Off && config.admin_key().is_none()
}

/// Hides a password in a database URL for logging.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
