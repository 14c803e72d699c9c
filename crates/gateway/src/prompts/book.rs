//! The in-memory snapshot of the registry that requests resolve against: no database
//! round trip on the request path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sconce_protocol::chat::PromptRef;
use sconce_protocol::ApiError;

use super::store::LabelRow;
use super::template::CompiledPrompt;
use super::{not_found, LabelSpec, PromptVersion, Split, DEFAULT_LABEL, LATEST};

/// One prompt: its compiled versions and its labels (`latest` is implied).
#[derive(Debug, Default)]
pub struct PromptEntry {
    pub versions: BTreeMap<u32, Arc<CompiledPrompt>>,
    pub labels: BTreeMap<String, Split>,
    /// The newest version's or label move's time.
    pub updated_at: i64,
}

/// What a request's `prompt` resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub prompt: Arc<CompiledPrompt>,
    /// The label it came through; none when the request named a version.
    pub label: Option<String>,
}

impl PromptEntry {
    pub fn latest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// A label's target; `latest` is the newest version.
    pub fn target(&self, label: &str) -> Option<Split> {
        match label {
            LATEST => Some(Split::single(self.latest())),
            _ => self.labels.get(label).cloned(),
        }
    }

    /// Every label, `latest` included, as the admin API shows them.
    pub fn label_specs(&self) -> BTreeMap<String, LabelSpec> {
        let mut specs: BTreeMap<String, LabelSpec> =
            self.labels.iter().map(|(label, split)| (label.clone(), spec_of(split))).collect();
        specs.insert(LATEST.into(), LabelSpec { version: Some(self.latest()), split: None });
        specs
    }

    /// Labels with any traffic on `version`, `latest` included.
    pub fn labels_on(&self, version: u32) -> Vec<String> {
        let mut labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(_, split)| split.arms().iter().any(|arm| arm.version == version))
            .map(|(label, _)| label.clone())
            .collect();
        if version == self.latest() {
            labels.push(LATEST.into());
        }
        labels
    }

    fn version(&self, name: &str, version: u32) -> Result<Arc<CompiledPrompt>, ApiError> {
        self.versions.get(&version).cloned().ok_or_else(|| {
            not_found("prompt.version", "prompt_version_not_found", format!("prompt `{name}` has no version {version}"))
        })
    }

    fn by_label(&self, name: &str, label: &str, sticky: &str) -> Result<Resolved, ApiError> {
        let split = self.target(label).ok_or_else(|| {
            not_found("prompt.label", "prompt_label_not_found", format!("prompt `{name}` has no label `{label}`"))
        })?;
        let prompt = self.version(name, split.choose(name, label, sticky))?;
        Ok(Resolved { prompt, label: Some(label.to_string()) })
    }
}

fn spec_of(split: &Split) -> LabelSpec {
    match split.arms() {
        [only] => LabelSpec { version: Some(only.version), split: None },
        _ => LabelSpec { version: None, split: Some(split.weights()) },
    }
}

/// Every prompt by name.
#[derive(Debug, Default)]
pub struct PromptBook {
    prompts: HashMap<String, PromptEntry>,
}

impl PromptBook {
    /// Builds a snapshot from the stored rows, reusing `previous`'s compiled versions
    /// (versions never change, so each is compiled once per process).
    pub fn build(previous: &PromptBook, versions: Vec<PromptVersion>, labels: Vec<LabelRow>) -> Self {
        let mut prompts: HashMap<String, PromptEntry> = HashMap::new();
        for version in versions {
            let Some(compiled) = previous.reuse(&version).or_else(|| compile(version)) else {
                continue;
            };
            let entry = prompts.entry(compiled.version.name.clone()).or_default();
            entry.updated_at = entry.updated_at.max(compiled.version.created_at);
            entry.versions.insert(compiled.version.version, compiled);
        }
        let mut weights: BTreeMap<(String, String), BTreeMap<u32, u32>> = BTreeMap::new();
        for row in labels {
            if let Some(entry) = prompts.get_mut(&row.name) {
                entry.updated_at = entry.updated_at.max(row.updated_at);
                weights.entry((row.name, row.label)).or_default().insert(row.version, row.weight);
            }
        }
        for ((name, label), weights) in weights {
            match (Split::new(&weights), prompts.get_mut(&name)) {
                (Ok(split), Some(entry)) => {
                    entry.labels.insert(label, split);
                }
                (Err(error), _) => {
                    tracing::warn!(%name, %label, error = %error.message, "skipping a stored prompt label")
                }
                _ => {}
            }
        }
        Self { prompts }
    }

    fn reuse(&self, version: &PromptVersion) -> Option<Arc<CompiledPrompt>> {
        let entry = self.prompts.get(&version.name)?;
        entry.versions.get(&version.version).filter(|compiled| compiled.version == *version).cloned()
    }

    pub fn get(&self, name: &str) -> Option<&PromptEntry> {
        self.prompts.get(name)
    }

    /// Names in order.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// `label` or `version` (neither: `production`, else `latest`); an experiment label
    /// picks a version by `sticky`, the caller's id.
    pub fn resolve(&self, reference: &PromptRef, sticky: &str) -> Result<Resolved, ApiError> {
        let name = reference.name.as_str();
        let entry = self
            .get(name)
            .ok_or_else(|| not_found("prompt.name", "prompt_not_found", format!("prompt `{name}` does not exist")))?;
        match (reference.version, reference.label.as_deref()) {
            (Some(_), Some(_)) => Err(ApiError::invalid_param("prompt", "give `label` or `version`, not both")),
            (Some(version), None) => Ok(Resolved { prompt: entry.version(name, version)?, label: None }),
            (None, Some(label)) => entry.by_label(name, label, sticky),
            (None, None) => {
                let label = if entry.labels.contains_key(DEFAULT_LABEL) { DEFAULT_LABEL } else { LATEST };
                entry.by_label(name, label, sticky)
            }
        }
    }
}

fn compile(version: PromptVersion) -> Option<Arc<CompiledPrompt>> {
    let (name, number) = (version.name.clone(), version.version);
    match CompiledPrompt::compile(version) {
        Ok(compiled) => Some(Arc::new(compiled)),
        Err(error) => {
            tracing::warn!(%name, version = number, error = %error.message, "skipping a stored prompt version");
            None
        }
    }
}
