//! `/v1/completions` request, response and stream chunk types.

use serde::{Deserialize, Serialize};

use crate::common::{SamplingOptions, Usage, MAX_TOP_LOGPROBS};
use crate::error::ApiError;
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

    pub fn validate(&self) -> Result<(), ApiError> {
        self.sampling.validate()?;
        if self.logprobs.is_some_and(|count| count > MAX_TOP_LOGPROBS) {
            return Err(ApiError::invalid_param("logprobs", "logprobs must be in 0..=20"));
        }
        if self.suffix.as_deref().is_some_and(|suffix| !suffix.is_empty()) {
            return Err(ApiError::invalid_param("suffix", "suffix is not supported"));
        }
        match &self.prompt {
            Prompt::Texts(list) if list.is_empty() => Err(empty_prompt()),
            Prompt::TokenLists(list) if list.is_empty() => Err(empty_prompt()),
            _ => Ok(()),
        }
    }
}

fn empty_prompt() -> ApiError {
    ApiError::invalid_param("prompt", "prompt must not be empty")
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
        assert!(req.validate().is_ok());
    }
}
