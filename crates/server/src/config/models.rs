//! `[[models]]`: models served beside the chat model of `[model]` (embedding models today),
//! each with its own batcher. `--embedding-model NAME` (repeatable) gives the same list.

use serde::{Deserialize, Serialize};

pub use sconce_modeling::ModelKind;

/// One extra model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Catalog name, Hugging Face id or local folder.
    pub name: String,
    /// What it serves: `embedding` (the chat model is `[model]`).
    pub kind: ModelKind,
    /// The name clients send as `model`; defaults to the catalog's served name, else `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model_name: Option<String>,
    /// Most padded tokens (inputs × longest input) in one forward pass.
    #[serde(default = "default_max_batch_tokens")]
    pub max_batch_tokens: usize,
    /// Most inputs in one forward pass.
    #[serde(default = "default_max_batch_inputs")]
    pub max_batch_inputs: usize,
    /// Inputs waiting beyond this are refused with 429 `overloaded`.
    #[serde(default = "default_max_queued_inputs")]
    pub max_queued_inputs: usize,
}

fn default_max_batch_tokens() -> usize {
    16_384
}

fn default_max_batch_inputs() -> usize {
    64
}

fn default_max_queued_inputs() -> usize {
    16_384
}

impl ModelEntry {
    /// An embedding model with the default batching.
    pub fn embedding(name: &str) -> Self {
        Self {
            name: name.to_string(),
            kind: ModelKind::Embedding,
            served_model_name: None,
            max_batch_tokens: default_max_batch_tokens(),
            max_batch_inputs: default_max_batch_inputs(),
            max_queued_inputs: default_max_queued_inputs(),
        }
    }

    /// `--embedding-model NAME`.
    pub fn from_flag(name: &str) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("an embedding model name must not be empty".into());
        }
        Ok(Self::embedding(name.trim()))
    }

    /// Startup checks: the kind, and batch bounds that let one full-length input run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.kind != ModelKind::Embedding {
            anyhow::bail!("[[models]] `{}`: kind must be \"embedding\" (the chat model is [model])", self.name);
        }
        if self.max_batch_inputs == 0 || self.max_batch_tokens == 0 || self.max_queued_inputs == 0 {
            anyhow::bail!(
                "[[models]] `{}`: max_batch_tokens, max_batch_inputs and max_queued_inputs must be > 0",
                self.name
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_with_defaults_and_refuse_unknown_keys() {
        let entry: ModelEntry = toml::from_str("name = \"all-minilm-l6-v2\"\nkind = \"embedding\"\n").unwrap();
        assert_eq!(entry, ModelEntry::embedding("all-minilm-l6-v2"));
        assert!(entry.check().is_ok());
        assert!(toml::from_str::<ModelEntry>("name = \"m\"\nkind = \"embedding\"\nbatch = 1\n").is_err());
        assert!(toml::from_str::<ModelEntry>("name = \"m\"\nkind = \"vision\"\n").is_err());
        let chat: ModelEntry = toml::from_str("name = \"m\"\nkind = \"chat\"\n").unwrap();
        assert!(chat.check().is_err());
        assert!(ModelEntry::from_flag(" ").is_err());
    }
}
