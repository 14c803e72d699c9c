//! Wires the `sconce-gateway` ops layer into the server: the local engine as the
//! innermost [`ChatBackend`], auth middleware, admin (keys, prompts) and usage routes.

use std::sync::Arc;

use sconce_gateway::ops::Gateway;
use sconce_gateway::SharedBackend;

use crate::state::AppState;

pub mod admin;
pub mod http;
pub mod local;
pub mod prompts;
pub mod stages;

/// The gateway and the stage stack built over the local engine.
#[derive(Clone)]
pub struct GatewayHandle {
    pub gateway: Arc<Gateway>,
    pub pipeline: SharedBackend,
}

/// Opens the gateway (when `[gateway] enabled`) and installs it on `state`.
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
    let gateway = Gateway::open(config.clone(), admin_key).await?;
    if config.admin_key_env.is_some() && config.admin_key().is_none() {
        tracing::warn!(variable = ?config.admin_key_env, "the admin key variable is unset: admin endpoints are closed");
    }
    let local: SharedBackend = Arc::new(local::LocalChat::new(state));
    let registry = gateway.metrics.registry();
    let inner = stages::innermost(config, local, registry).map_err(anyhow::Error::msg)?;
    let pipeline = stages::push(gateway.stack(), config, registry).map_err(anyhow::Error::msg)?.build(inner);
    tracing::info!(auth = gateway.auth.is_enabled(), database = %redacted(&config.resolved_database_url()), "gateway on");
    state.set_gateway(GatewayHandle { gateway, pipeline });
    Ok(())
}

/// Hides a password in a database URL for logging.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_string(),
    }
}
