//! `/v1/completions` request, response and stream chunk types.

use serde::{Deserialize, Serialize};

use crate::common::{SamplingOptions, Usage};
use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::logprobs::CompletionLogprobs;

/// A prompt: text, texts, token ids, or lists of token ids. Each list entry is its own prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

/// One prompt of a (possibly batched) request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Tokens(Vec<u32>),
}

impl Prompt {
    pub fn into_inputs(self) -> Vec<PromptInput> {
        match self {
            Prompt::Text(text) => vec![PromptInput::Text(text)],
            Prompt::Tokens(tokens) => vec![PromptInput::Tokens(tokens)],
            Prompt::Texts(texts) => texts.into_iter().map(PromptInput::Text).collect(),
            Prompt::TokenLists(lists) => lists.into_iter().map(PromptInput::Tokens).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub sampling: SamplingOptions,
    /// Return the prompt before the completion (with its logprobs when `logprobs` is set).
    #[serde(default)]
    pub echo: Option<bool>,
    /// Number of top alternatives per token, 0..=20.
    #[serde(default)]
    pub logprobs: Option<usize>,
    #[serde(default)]
    pub suffix: Option<String>,
}

/// Completions default to 16 new tokens, as in OpenAI's API.
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;

impl CompletionRequest {
    pub fn echo(&self) -> bool {
        self.echo.unwrap_or(false)
    }

    /// How many prompts the request holds (a batch or one).
    pub fn prompt_count(&self) -> usize {
        match &self.prompt {
            Prompt::Text(_) | Prompt::Tokens(_) => 1,
            Prompt::Texts(list) => list.len(),
            Prompt::TokenLists(list) => list.len(),
        }
    }

    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        limits.check_model(self.model.as_deref())?;
        self.sampling.validate(limits)?;
        if self.logprobs.is_some_and(|count| count > limits.max_top_logprobs) {
            let message = format!("logprobs must be in 0..={}", limits.max_top_logprobs);
            return Err(ApiError::invalid_param("logprobs", message));
        }
        if self.suffix.as_deref().is_some_and(|suffix| !suffix.is_empty()) {
            return Err(ApiError::invalid_param("suffix", "suffix is not supported"));
        }
        let prompts = self.prompt_count();
        if prompts == 0 {
            return Err(ApiError::invalid_param("prompt", "prompt must not be empty"));
        }
        RequestLimits::check_at_most("prompt", "the number of prompts", prompts, limits.max_prompts)?;
        let choices = prompts.saturating_mul(self.sampling.choices());
        RequestLimits::check_at_most("n", "the number of choices (prompts × n)", choices, limits.max_choices)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

/// Both the full response and each stream chunk (`object` is `text_completion` for both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    /// Always set on a full response; on chunks absent, `null`, or set on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

pub const COMPLETION_OBJECT: &str = "text_completion";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(value: serde_json::Value) -> Vec<PromptInput> {
        let req: CompletionRequest = serde_json::from_value(json!({"prompt": value})).unwrap();
        req.prompt.into_inputs()
    }

    #[test]
    fn every_prompt_shape_parses() {
        assert_eq!(prompt(json!("hi")), vec![PromptInput::Text("hi".into())]);
        assert_eq!(prompt(json!(["a", "b"])).len(), 2);
        assert_eq!(prompt(json!([1, 2, 3])), vec![PromptInput::Tokens(vec![1, 2, 3])]);
        assert_eq!(prompt(json!([[1], [2, 3]])), vec![PromptInput::Tokens(vec![1]), PromptInput::Tokens(vec![2, 3])]);
    }

    #[test]
    fn echo_and_logprobs_are_read() {
        let req: CompletionRequest =
            serde_json::from_value(json!({"prompt": "x", "echo": true, "logprobs": 1, "max_tokens": 1})).unwrap();
        assert!(req.echo());
        assert_eq!(req.logprobs, Some(1));
        assert!(req.validate(&RequestLimits::default()).is_ok());
    }

    fn refused(value: serde_json::Value) -> Option<String> {
        let req: CompletionRequest = serde_json::from_value(value).unwrap();
        req.validate(&RequestLimits::default()).err().and_then(|err| err.param)
    }

    #[test]
    fn prompt_lists_and_choices_are_bounded() {
        let texts: Vec<String> = (0..128).map(|i| i.to_string()).collect();
        assert_eq!(refused(json!({"prompt": texts})), None);
        let texts: Vec<String> = (0..129).map(|i| i.to_string()).collect();
        assert_eq!(refused(json!({"prompt": texts})).as_deref(), Some("prompt"));
        let lists: Vec<Vec<u32>> = vec![vec![1]; 129];
        assert_eq!(refused(json!({"prompt": lists})).as_deref(), Some("prompt"));
        let lists: Vec<Vec<u32>> = vec![vec![1]; 3];
        assert_eq!(refused(json!({"prompt": lists, "n": 128})).as_deref(), Some("n"));
        assert_eq!(refused(json!({"prompt": [[1], [2]], "n": 128})), None);
        assert_eq!(refused(json!({"prompt": "x", "logprobs": 21})).as_deref(), Some("logprobs"));
    }
}
