//! The prompt registry: named chat templates with immutable, numbered versions; labels
//! that point at one version or split traffic across several (A/B experiments); and the
//! stage that renders a request's `prompt` into its messages before policy, guardrails
//! and the cache see it.

pub mod book;
pub mod layer;
pub mod registry;
pub mod split;
pub mod store;
pub mod template;

use std::collections::BTreeMap;

use sconce_protocol::chat::{ChatCompletionRequest, Role};
use sconce_protocol::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use book::{PromptBook, Resolved};
pub use layer::PromptStage;
pub use registry::PromptRegistry;
pub use split::Split;

/// The label every prompt has: its newest version. It cannot be moved or deleted.
pub const LATEST: &str = "latest";
/// The label a request without `label` or `version` asks for (then `latest`).
pub const DEFAULT_LABEL: &str = "production";
/// Response headers naming the prompt version used and the label it came through.
pub const PROMPT_HEADER: &str = "x-sconce-prompt";
pub const PROMPT_LABEL_HEADER: &str = "x-sconce-prompt-label";

const MAX_NAME_LEN: usize = 64;
/// Fields a prompt's `params` may not set: they belong to the request or the prompt itself.
const RESERVED_PARAMS: &[&str] = &["messages", "prompt", "model", "stream", "stream_options", "user"];

/// One message of a template; `content` may hold `{{ variable }}` placeholders (Jinja).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    pub role: Role,
    pub content: String,
}

/// What `POST /admin/prompts` and `sconce prompts create` accept: a new version.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrompt {
    pub name: String,
    pub messages: Vec<TemplateMessage>,
    /// The model a request gets when it names none.
    #[serde(default)]
    pub model: Option<String>,
    /// Sampling fields (`temperature`, `max_tokens`, …) a request gets when it sets none.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The commit message.
    #[serde(default)]
    pub message: Option<String>,
    /// Labels to point at the new version.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// One stored, immutable version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    pub name: String,
    pub version: u32,
    pub messages: Vec<TemplateMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The commit message.
    pub message: String,
    pub created_at: i64,
}

/// A label's target, as `PUT /admin/prompts/{name}/labels/{label}` takes it and the
/// listings show it: one version, or weights per version (`{"3": 90, "4": 10}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<BTreeMap<u32, u32>>,
}

/// The version a request used: `name@version`, and the label it came through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTag {
    pub name: String,
    pub version: u32,
    pub label: Option<String>,
    /// The prompt's default model when the request took it.
    pub model: Option<String>,
}

impl std::fmt::Display for PromptTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A version as the admin API shows it: with its variables and the labels on it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionView {
    #[serde(flatten)]
    pub version: PromptVersion,
    pub variables: Vec<String>,
    pub labels: Vec<String>,
}

/// A prompt in `GET /admin/prompts`.
#[derive(Debug, Clone, Serialize)]
pub struct PromptSummary {
    pub name: String,
    pub latest_version: u32,
    pub versions: usize,
    pub labels: BTreeMap<String, LabelSpec>,
    pub updated_at: i64,
}

/// A prompt in `GET /admin/prompts/{name}`: every version, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct PromptDetail {
    pub name: String,
    pub latest_version: u32,
    pub labels: BTreeMap<String, LabelSpec>,
    pub versions: Vec<VersionView>,
}

/// 404 in the OpenAI envelope for a missing prompt, label or version.
pub fn not_found(param: &'static str, code: &'static str, message: String) -> ApiError {
    crate::GatewayError::NotFound { param, code, message }.into()
}

/// Names and labels: 1 to 64 of `A-Z a-z 0-9 _ - .`, so they fit a URL path segment.
pub fn check_name(param: &str, name: &str) -> Result<(), ApiError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(valid_char) {
        return Err(ApiError::invalid_param(
            param,
            format!("`{name}` is not a valid {param}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 _ - ."),
        ));
    }
    Ok(())
}

/// A label that may be set or deleted: a valid name other than `latest`.
pub fn check_label(param: &str, label: &str) -> Result<(), ApiError> {
    check_name(param, label)?;
    if label == LATEST {
        return Err(ApiError::invalid_param(param, "`latest` always points at the newest version"));
    }
    Ok(())
}

impl NewPrompt {
    /// Checks everything but the templates (compiled by [`template::CompiledPrompt`]).
    pub fn check(&self) -> Result<(), ApiError> {
        check_name("name", &self.name)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param("messages", "a prompt needs at least one message"));
        }
        if self.model.as_deref().is_some_and(|model| model.trim().is_empty()) {
            return Err(ApiError::invalid_param("model", "model must not be empty"));
        }
        for label in &self.labels {
            check_label("labels", label)?;
        }
        check_params(&self.params)
    }
}

/// `params` must be sampling fields of a chat request, with valid values.
pub fn check_params(params: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(reserved) = params.keys().find(|key| RESERVED_PARAMS.contains(&key.as_str())) {
        return Err(ApiError::invalid_param("params", format!("`{reserved}` cannot be a prompt parameter")));
    }
    if let Some((null, _)) = params.iter().find(|(_, value)| value.is_null()) {
        return Err(ApiError::invalid_param("params", format!("`{null}` must not be null")));
    }
    let mut probe = params.clone();
    probe.insert("messages".into(), serde_json::json!([{"role": "user", "content": "x"}]));
    let request: ChatCompletionRequest = serde_json::from_value(Value::Object(probe))
        .map_err(|error| ApiError::invalid_param("params", format!("invalid params: {error}")))?;
    let parsed = serde_json::to_value(&request).unwrap_or(Value::Null);
    if let Some(unknown) = params.keys().find(|key| parsed.get(key.as_str()).is_none_or(Value::is_null)) {
        return Err(ApiError::invalid_param("params", format!("`{unknown}` is not a chat request parameter")));
    }
    // Checked again, within the configured limits, when a request uses the prompt.
    request.validate(&sconce_protocol::RequestLimits::default()).map_err(|error| {
        let param = error.param.as_deref().map_or("params".to_string(), |param| format!("params.{param}"));
        ApiError::invalid_param(&param, error.message)
    })
}

#[cfg(test)]
mod tests;
