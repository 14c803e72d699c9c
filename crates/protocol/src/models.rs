//! `/v1/models` shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub root: String,
    /// Unknown for names routed to remote upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<usize>,
    /// What a local model serves: `chat` or `embedding` (with its vector size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
    /// Sconce's extension on gateway-routed names: what the name routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sconce: Option<ModelRoute>,
}

impl ModelCard {
    pub fn new(id: &str, root: &str, created: u64, max_model_len: usize) -> Self {
        Self {
            id: id.to_string(),
            object: "model".to_string(),
            created,
            owned_by: "sconce".to_string(),
            root: root.to_string(),
            max_model_len: Some(max_model_len),
            kind: None,
            dimensions: None,
            sconce: None,
        }
    }
}

/// How the gateway serves a name: a group of deployments, an alias of one, or `auto`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRoute {
    /// `group`, `alias` or `auto`.
    pub kind: String,
    /// The group the name resolves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<String>,
    /// `auto` only: tier to model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

impl ModelList {
    pub fn new(data: Vec<ModelCard>) -> Self {
        Self { object: "list".to_string(), data }
    }
}
