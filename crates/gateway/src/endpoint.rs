//! What the meter and the policy read from each endpoint's requests and replies, so
//! `/v1/chat/completions` and `/v1/completions` share one metering and policy path.

use sconce_protocol::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::completion::{CompletionRequest, CompletionResponse, Prompt, DEFAULT_COMPLETION_TOKENS};
use sconce_protocol::Usage;

use crate::telemetry::Operation;

/// A request as the policy checks it and the ledger records it.
pub trait EndpointRequest: Send + 'static {
    /// The ledger's `operation` (OpenTelemetry's `gen_ai.operation.name`).
    const OPERATION: Operation;

    fn model(&self) -> Option<&str>;
    /// The OpenAI `user` field.
    fn user(&self) -> Option<&str>;
    /// The effective `max_tokens`; none: up to the context length.
    fn max_tokens(&self) -> Option<usize>;
    fn set_max_tokens(&mut self, max_tokens: usize);
    /// A cheap prompt-size estimate (4 bytes a token) for the TPM pre-check.
    fn estimated_prompt_tokens(&self) -> u64;
}

/// A full reply or one stream chunk, as the meter reads it.
pub trait EndpointReply: Send + 'static {
    fn model(&self) -> &str;
    /// Whether any choice carries text (the first one marks the time to first token).
    fn shows_text(&self) -> bool;
    /// The first finish reason among the choices.
    fn finish_reason(&self) -> Option<&str>;
    fn usage(&self) -> Option<&Usage>;
    fn usage_mut(&mut self) -> Option<&mut Usage>;
    /// The closing `choices: []` chunk that carries only the usage.
    fn is_usage_only(&self) -> bool;
}

fn bytes_to_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

impl EndpointRequest for ChatCompletionRequest {
    const OPERATION: Operation = Operation::Chat;

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn user(&self) -> Option<&str> {
        self.sampling.user.as_deref()
    }

    fn max_tokens(&self) -> Option<usize> {
        ChatCompletionRequest::max_tokens(self)
    }

    fn set_max_tokens(&mut self, max_tokens: usize) {
        self.max_completion_tokens = Some(max_tokens);
    }

    fn estimated_prompt_tokens(&self) -> u64 {
        let bytes = self.messages.iter().map(|message| message.text().map_or(0, |text| text.len())).sum();
        bytes_to_tokens(bytes).max(1)
    }
}

impl EndpointRequest for CompletionRequest {
    const OPERATION: Operation = Operation::TextCompletion;

    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn user(&self) -> Option<&str> {
        self.sampling.user.as_deref()
    }

    fn max_tokens(&self) -> Option<usize> {
        Some(self.sampling.max_tokens.unwrap_or(DEFAULT_COMPLETION_TOKENS))
    }

    fn set_max_tokens(&mut self, max_tokens: usize) {
        self.sampling.max_tokens = Some(max_tokens);
    }

    /// Every prompt of a batch counts; token prompts count exactly.
    fn estimated_prompt_tokens(&self) -> u64 {
        let tokens = match &self.prompt {
            Prompt::Text(text) => bytes_to_tokens(text.len()),
            Prompt::Texts(texts) => texts.iter().map(|text| bytes_to_tokens(text.len())).sum(),
            Prompt::Tokens(tokens) => tokens.len() as u64,
            Prompt::TokenLists(lists) => lists.iter().map(|tokens| tokens.len() as u64).sum(),
        };
        tokens.max(1)
    }
}

/// The methods chunk-shaped replies spell alike: `choices`, and a `usage` that is absent,
/// `null` or set.
macro_rules! chunk_shaped {
    () => {
        fn model(&self) -> &str {
            &self.model
        }

        fn finish_reason(&self) -> Option<&str> {
            self.choices.iter().find_map(|choice| choice.finish_reason.as_deref())
        }

        fn usage(&self) -> Option<&Usage> {
            self.usage.as_ref().and_then(Option::as_ref)
        }

        fn usage_mut(&mut self) -> Option<&mut Usage> {
            self.usage.as_mut().and_then(Option::as_mut)
        }

        fn is_usage_only(&self) -> bool {
            self.choices.is_empty() && self.usage().is_some()
        }
    };
}

impl EndpointReply for ChatCompletionChunk {
    chunk_shaped!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| choice.delta.content.as_deref().is_some_and(|text| !text.is_empty()))
    }
}

/// Both the full `/v1/completions` response and its chunks.
impl EndpointReply for CompletionResponse {
    chunk_shaped!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| !choice.text.is_empty())
    }
}

impl EndpointReply for ChatCompletionResponse {
    fn model(&self) -> &str {
        &self.model
    }

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| !choice.message.content.is_empty())
    }

    fn finish_reason(&self) -> Option<&str> {
        self.choices.iter().find_map(|choice| choice.finish_reason.as_deref())
    }

    fn usage(&self) -> Option<&Usage> {
        Some(&self.usage)
    }

    fn usage_mut(&mut self) -> Option<&mut Usage> {
        Some(&mut self.usage)
    }

    fn is_usage_only(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn completion_batches_estimate_every_prompt_and_default_to_sixteen_tokens() {
        let request: CompletionRequest =
            serde_json::from_value(json!({"prompt": ["abcdefgh", "abcd"], "model": "m"})).unwrap();
        assert_eq!(request.estimated_prompt_tokens(), 3);
        assert_eq!(EndpointRequest::max_tokens(&request), Some(DEFAULT_COMPLETION_TOKENS));
        let tokens: CompletionRequest = serde_json::from_value(json!({"prompt": [[1, 2, 3], [4]]})).unwrap();
        assert_eq!(tokens.estimated_prompt_tokens(), 4);
    }

    #[test]
    fn usage_only_chunks_are_told_apart() {
        let chunk: CompletionResponse = serde_json::from_value(json!({"id": "c", "object": "text_completion",
            "created": 0, "model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2,
            "total_tokens": 3, "prompt_tokens_details": {"cached_tokens": 0}}}))
        .unwrap();
        assert!(chunk.is_usage_only() && !chunk.shows_text());
        assert_eq!(chunk.usage().map(|usage| usage.completion_tokens), Some(2));
    }
}
