//! `[gateway.semantic_cache]`: which requests the semantic cache answers, and where its
//! entries live.

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// Where entries live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SemanticBackendKind {
    /// This process only.
    #[default]
    Memory,
    /// Rows in the gateway's Postgres database, kept in step across replicas by `NOTIFY`.
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemanticCacheConfig {
    pub enabled: bool,
    /// Cosine similarity at or above which a cached answer is served.
    pub threshold: f32,
    pub ttl_secs: u64,
    /// Entries kept in all (the least recently used go first).
    pub max_entries: usize,
    /// Served names (groups, aliases, the local model) it applies to; empty: every model.
    pub models: Vec<String>,
    /// Keeps each team's answers to itself.
    pub partition_by_team: bool,
    pub backend: SemanticBackendKind,
    /// Starts generating while the question is embedded, and drops that generation on a hit:
    /// a miss then costs about nothing in latency (it spends compute on hits instead).
    pub speculate: bool,
    /// The served embedding model that embeds the questions; none: the first one served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<String>,
}

impl Default for SemanticCacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threshold: 0.92,
            ttl_secs: 3600,
            max_entries: 10_000,
            models: Vec::new(),
            partition_by_team: true,
            backend: SemanticBackendKind::Memory,
            speculate: true,
            embedding_model: None,
        }
    }
}

impl SemanticCacheConfig {
    /// Whether requests for `model` take part.
    pub fn covers(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|name| name == model)
    }

    /// Refuses settings that cannot work with the gateway's database.
    pub fn check(&self, database_url: &str) -> Result<(), GatewayError> {
        if !self.enabled {
            return Ok(());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(GatewayError::config("`[gateway.semantic_cache] threshold` must be within 0..=1"));
        }
        if self.max_entries == 0 {
            return Err(GatewayError::config("`[gateway.semantic_cache] max_entries` must be at least 1"));
        }
        let postgres = database_url.starts_with("postgres:") || database_url.starts_with("postgresql:");
        if self.backend == SemanticBackendKind::Postgres && !postgres {
            return Err(GatewayError::config(
                "`[gateway.semantic_cache] backend = \"postgres\"` needs a Postgres `database_url` \
                 (SQLite has no LISTEN/NOTIFY to keep replicas in step)",
            ));
        }
        Ok(())
    }
}
