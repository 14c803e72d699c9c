//! `/v1/chat/completions` request, response and stream chunk types.

use serde::{Deserialize, Serialize};

use crate::common::{check_max_tokens, SamplingOptions, Usage};
use crate::error::ApiError;
use crate::limits::RequestLimits;
use crate::logprobs::ChatLogprobs;
use crate::tools::{tool_mode, Tool, ToolCall, ToolCallDelta, ToolChoice, ToolMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
            Role::Function => "function",
        }
    }
}

/// One part of an array-valued `content`. Only text parts can be served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ContentPart {
    #[serde(rename = "text")]
    Text { text: String },
    #[serde(other)]
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant turn's calls, sent back in the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A `tool` message answers this call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// The message's text; text parts are joined with newlines.
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(MessageContent::Text(text)) => Ok(text.clone()),
            Some(MessageContent::Parts(parts)) => join_text_parts(parts),
        }
    }
}

fn join_text_parts(parts: &[ContentPart]) -> Result<String, ApiError> {
    let mut texts = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ContentPart::Text { text } => texts.push(text.as_str()),
            ContentPart::Unsupported => {
                return Err(ApiError::invalid_param(
                    "messages",
                    "only `text` content parts are supported by this model",
                ))
            }
        }
    }
    Ok(texts.join("\n"))
}

/// Sconce extension: a prompt from the gateway's registry, rendered in front of `messages`
/// (send it through the OpenAI SDKs' `extra_body`). Neither `label` nor `version`:
/// the `production` label, else `latest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    /// May be empty when `prompt` supplies the messages.
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    /// A registry prompt; the gateway replaces it with its rendered messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<PromptRef>,
    #[serde(flatten)]
    pub sampling: SamplingOptions,
    /// Newer name for `max_tokens`; wins when both are set.
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether one reply may hold several calls (default: whether the chat template supports tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// vLLM extra: append the assistant header to the prompt (default true).
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
}

impl ChatCompletionRequest {
    pub fn max_tokens(&self) -> Option<usize> {
        self.max_completion_tokens.or(self.sampling.max_tokens)
    }

    /// How many top alternatives to return per token, when logprobs are on.
    pub fn logprobs_count(&self) -> Option<usize> {
        self.logprobs.unwrap_or(false).then(|| self.top_logprobs.unwrap_or(0))
    }

    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        limits.check_model(self.model.as_deref())?;
        self.sampling.validate(limits)?;
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param("messages", "messages must not be empty"));
        }
        check_max_tokens("max_completion_tokens", self.max_completion_tokens)?;
        if self.top_logprobs.is_some_and(|top| top > limits.max_top_logprobs) {
            let message = format!("top_logprobs must be in 0..={}", limits.max_top_logprobs);
            return Err(ApiError::invalid_param("top_logprobs", message));
        }
        if self.top_logprobs.is_some() && self.logprobs != Some(true) {
            return Err(ApiError::invalid_param("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        let mode = self.tool_mode()?;
        if mode != ToolMode::None && self.sampling.output_constraint()?.is_some() {
            let message =
                "tool calls and an output constraint (response_format, structured_outputs) cannot be combined";
            return Err(ApiError::invalid_param("tools", message));
        }
        Ok(())
    }

    /// What the model may do with `tools`, checked against `tool_choice`.
    pub fn tool_mode(&self) -> Result<ToolMode, ApiError> {
        tool_mode(self.tools.as_deref().unwrap_or_default(), self.tool_choice.as_ref())
    }
}

/// The reply's message: `content` is `null` on the wire when the turn is only calls.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssistantMessage {
    pub role: Role,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl AssistantMessage {
    pub fn text(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into(), tool_calls: None }
    }
}

impl Serialize for AssistantMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let calls = self.tool_calls.as_ref().filter(|calls| !calls.is_empty());
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("role", &self.role)?;
        let content = (calls.is_none() || !self.content.is_empty()).then_some(&self.content);
        map.serialize_entry("content", &content)?;
        if let Some(calls) = calls {
            map.serialize_entry("tool_calls", calls)?;
        }
        map.end()
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

/// What one stream chunk adds to a choice's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    /// Absent without `include_usage`; `null` on every chunk but the last with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

pub const CHAT_OBJECT: &str = "chat.completion";
pub const CHAT_CHUNK_OBJECT: &str = "chat.completion.chunk";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(value: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn content_parts_and_developer_role_parse() {
        let req = request(json!({
            "model": "m", "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ], "unknown_field": {"ignored": true}
        }));
        assert_eq!(req.messages[0].role, Role::Developer);
        assert_eq!(req.messages[1].text().unwrap(), "a\nb");
    }

    #[test]
    fn image_parts_are_refused() {
        let req = request(
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        );
        assert!(req.messages[0].text().is_err());
    }

    #[test]
    fn max_completion_tokens_wins_and_tools_are_checked() {
        let req = request(
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 7}),
        );
        assert_eq!(req.max_tokens(), Some(7));
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let req = request(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools}));
        assert_eq!(req.tool_mode().unwrap(), ToolMode::Auto);
        let both = json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools,
            "response_format": {"type": "json_object"}});
        assert_eq!(request(both).validate(&RequestLimits::default()).unwrap_err().param.as_deref(), Some("tools"));
    }

    #[test]
    fn call_only_replies_have_null_content() {
        let call: ToolCall = serde_json::from_value(json!({"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}))
        .unwrap();
        let message = AssistantMessage { tool_calls: Some(vec![call]), ..AssistantMessage::text("") };
        let wire = serde_json::to_value(&message).unwrap();
        assert!(wire["content"].is_null());
        assert_eq!(wire["tool_calls"][0]["function"]["name"], "f");
        let back: AssistantMessage = serde_json::from_value(wire).unwrap();
        assert_eq!(back, message);
        assert_eq!(serde_json::to_value(AssistantMessage::text("hi")).unwrap()["content"], "hi");
    }

    #[test]
    fn top_logprobs_max_completion_tokens_and_model_are_bounded() {
        let limits = RequestLimits::default();
        let base = json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true});
        let with = |key: &str, value: serde_json::Value| {
            let mut body = base.clone();
            body[key] = value;
            request(body).validate(&limits).err().and_then(|err| err.param)
        };
        assert_eq!(with("top_logprobs", json!(20)), None);
        assert_eq!(with("top_logprobs", json!(21)).as_deref(), Some("top_logprobs"));
        assert_eq!(with("max_completion_tokens", json!(u64::MAX)).as_deref(), Some("max_completion_tokens"));
        assert_eq!(with("model", json!("m".repeat(257))).as_deref(), Some("model"));
        let tight = RequestLimits { max_top_logprobs: 5, ..RequestLimits::default() };
        let mut body = base.clone();
        body["top_logprobs"] = json!(6);
        assert!(request(body).validate(&tight).is_err());
    }

    #[test]
    fn chunk_usage_is_absent_null_or_set() {
        let mut chunk = ChatCompletionChunk {
            id: "c".into(),
            object: CHAT_CHUNK_OBJECT.into(),
            created: 1,
            model: "m".into(),
            choices: vec![],
            usage: None,
        };
        assert!(serde_json::to_value(&chunk).unwrap().get("usage").is_none());
        chunk.usage = Some(None);
        assert!(serde_json::to_value(&chunk).unwrap()["usage"].is_null());
    }
}
