//! The semantic cache's embedder: the served embedding model (`[[models]]`), looked up at
//! each call, so the cache can be connected before the models have loaded.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sconce_gateway::error::GatewayError;
use sconce_gateway::semantic::Embedder;

use crate::state::AppState;

/// Embeds with `model` (none: the first embedding model served); an error (a miss for the
/// cache) until the models have loaded.
pub struct ServedEmbedder {
    state: AppState,
    model: Option<String>,
}

impl ServedEmbedder {
    pub fn new(state: AppState, model: Option<String>) -> Arc<Self> {
        Arc::new(Self { state, model })
    }
}

impl Embedder for ServedEmbedder {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        let Some(service) = self.state.embeddings() else {
            return Box::pin(async { Err(not_ready("the embedding models have not loaded yet")) });
        };
        let embedding = service.embed(self.model.clone(), texts);
        Box::pin(async move { embedding.await.map_err(|error| not_ready(&error.message)) })
    }
}

fn not_ready(message: &str) -> GatewayError {
    GatewayError::Internal(anyhow::anyhow!("semantic cache embedder: {message}"))
}

/// The semantic cache needs an embedding model to embed with; says which when one is missing.
pub fn check_embedding_model(
    gateway: &sconce_gateway::config::GatewayConfig,
    served: &[crate::config::ModelEntry],
) -> anyhow::Result<()> {
    let semantic = &gateway.semantic_cache;
    if !gateway.enabled || !semantic.enabled {
        return Ok(());
    }
    let known =
        |name: &str| served.iter().any(|entry| entry.name == name || entry.served_model_name.as_deref() == Some(name));
    match &semantic.embedding_model {
        _ if served.is_empty() => anyhow::bail!(
            "`[gateway.semantic_cache]` is on but no embedding model is served: add `--embedding-model \
             all-minilm-l6-v2` or a `[[models]]` entry with `kind = \"embedding\"`"
        ),
        Some(name) if !known(name) => anyhow::bail!(
            "`[gateway.semantic_cache] embedding_model = {name:?}` is not among the served embedding models"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use sconce_gateway::config::GatewayConfig;

    use super::check_embedding_model;
    use crate::config::ModelEntry;

    fn semantic_on(model: Option<&str>) -> GatewayConfig {
        let mut config = GatewayConfig { enabled: true, ..GatewayConfig::default() };
        config.semantic_cache.enabled = true;
        config.semantic_cache.embedding_model = model.map(str::to_string);
        config
    }

    #[test]
    fn the_semantic_cache_needs_a_served_embedding_model() {
        let none = check_embedding_model(&semantic_on(None), &[]).unwrap_err().to_string();
        assert!(none.contains("--embedding-model"), "{none}");
        let served = [ModelEntry::embedding("all-minilm-l6-v2")];
        check_embedding_model(&semantic_on(None), &served).unwrap();
        check_embedding_model(&semantic_on(Some("all-minilm-l6-v2")), &served).unwrap();
        let unknown = check_embedding_model(&semantic_on(Some("e5")), &served).unwrap_err().to_string();
        assert!(unknown.contains("\"e5\""), "{unknown}");
        check_embedding_model(&GatewayConfig::default(), &[]).unwrap();
    }
}
