//! vLLM's `/tokenize` and `/detokenize` shapes.

use serde::{Deserialize, Serialize};

use crate::chat::ChatMessage;

/// Either `prompt` (with `add_special_tokens`, default true) or chat `messages`
/// (rendered with the chat template; `add_generation_prompt` defaults to true).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenizeRequest {
    Completion {
        #[serde(default)]
        model: Option<String>,
        prompt: String,
        #[serde(default)]
        add_special_tokens: Option<bool>,
        #[serde(default)]
        return_token_strs: Option<bool>,
    },
    Chat {
        #[serde(default)]
        model: Option<String>,
        messages: Vec<ChatMessage>,
        #[serde(default)]
        add_generation_prompt: Option<bool>,
        #[serde(default)]
        return_token_strs: Option<bool>,
    },
}

impl TokenizeRequest {
    pub fn model(&self) -> Option<&str> {
        match self {
            TokenizeRequest::Completion { model, .. } | TokenizeRequest::Chat { model, .. } => model.as_deref(),
        }
    }

    pub fn return_token_strs(&self) -> bool {
        match self {
            TokenizeRequest::Completion { return_token_strs, .. } | TokenizeRequest::Chat { return_token_strs, .. } => {
                return_token_strs.unwrap_or(false)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    pub token_strs: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_and_messages_forms_parse() {
        let req: TokenizeRequest = serde_json::from_value(json!({"prompt": "hi"})).unwrap();
        assert!(matches!(req, TokenizeRequest::Completion { .. }));
        let req: TokenizeRequest =
            serde_json::from_value(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(req.model(), Some("m"));
        assert!(matches!(req, TokenizeRequest::Chat { .. }));
    }
}
