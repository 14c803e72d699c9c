//! Guardrail settings as read from the config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happens when a check fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request (input: 400; stream: end with `content_filter`).
    Block,
    /// Replace what matched with `<CHECK_NAME>`.
    Mask,
    /// Let it through; count and log it.
    Log,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Mask => "mask",
            Action::Log => "log",
        }
    }
}

/// `[[gateway.guardrails.policies]]` entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardrailsConfig {
    pub policies: Vec<PolicyConfig>,
}

/// One policy. It applies to the listed keys and teams; one with neither (or named `default`)
/// applies to everyone else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub name: String,
    pub keys: Vec<String>,
    pub teams: Vec<String>,
    /// Check name to action, on prompts. Names: Presidio entities (`EMAIL_ADDRESS`,
    /// `PHONE_NUMBER`, `CREDIT_CARD`, `IBAN_CODE`, `US_SSN`, `IP_ADDRESS`), `SECRET`, `PII`
    /// (all of those), `BLOCKED_PATTERN`, `BLOCKED_KEYWORD`, `TOXICITY`, `PROMPT_INJECTION`, `LENGTH`.
    pub input: BTreeMap<String, Action>,
    /// The same on generated text, plus `LOW_CONFIDENCE`.
    pub output: BTreeMap<String, Action>,
    pub blocked_patterns: Vec<String>,
    pub blocked_keywords: Vec<String>,
    pub toxicity_threshold: f32,
    /// Extra or overriding lexicon terms with weights in [0, 1].
    pub toxicity_lexicon: BTreeMap<String, f32>,
    pub injection_threshold: f32,
    /// Longest prompt in characters (`LENGTH`); 0 means no limit.
    pub max_input_chars: usize,
    /// `LOW_CONFIDENCE` fires below this mean token logprob.
    pub min_mean_logprob: Option<f32>,
    /// `LOW_CONFIDENCE` fires when any token logprob is below this.
    pub min_token_logprob: Option<f32>,
    /// Bytes of streamed output held back so a split entity is never sent unmasked.
    pub holdback_bytes: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            keys: Vec::new(),
            teams: Vec::new(),
            input: BTreeMap::new(),
            output: BTreeMap::new(),
            blocked_patterns: Vec::new(),
            blocked_keywords: Vec::new(),
            toxicity_threshold: 0.8,
            toxicity_lexicon: BTreeMap::new(),
            injection_threshold: 0.8,
            max_input_chars: 0,
            min_mean_logprob: None,
            min_token_logprob: None,
            holdback_bytes: 48,
        }
    }
}
