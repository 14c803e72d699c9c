//! `/v1/models` shapes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub root: String,
    pub max_model_len: usize,
}

impl ModelCard {
    pub fn new(id: &str, root: &str, created: u64, max_model_len: usize) -> Self {
        Self {
            id: id.to_string(),
            object: "model".to_string(),
            created,
            owned_by: "sconce".to_string(),
            root: root.to_string(),
            max_model_len,
        }
    }
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
