//! `/v1/chat/completions` as the stages see it.

use sconce_protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatDelta, ChatMessage, MessageContent, Role, CHAT_CHUNK_OBJECT, CHAT_OBJECT,
};
use sconce_protocol::logprobs::ChatLogprobs;
use sconce_protocol::tools::{fold_tool_calls, tool_call_deltas, FunctionCallDelta, ToolCallDelta};
use sconce_protocol::{ApiError, RequestLimits, SamplingOptions, Usage};

use super::{bytes_to_tokens, slot, split_pieces, ApiReply, ApiRequest, ArgumentsText, ChoiceText, TextRef};

/// Room for a chat template's markers around one message (and the generation prompt).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;

impl ApiRequest for ChatCompletionRequest {
    const PROMPT_PARAM: &'static str = "messages";

    common_request_fields!();

    /// A registry `prompt` may stand in for the messages (the prompt stage renders them).
    fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        if self.prompt.is_some() && self.messages.is_empty() {
            let mut probe = self.clone();
            probe.messages.push(ChatMessage {
                role: Role::User,
                content: None,
                name: None,
                tool_calls: None,
                tool_call_id: None,
            });
            return ChatCompletionRequest::validate(&probe, limits);
        }
        ChatCompletionRequest::validate(self, limits)
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

    /// Each message's bytes, its role and [`TEMPLATE_TOKENS_PER_MESSAGE`] markers.
    fn prompt_token_bound(&self) -> u64 {
        let per_message = |message: &ChatMessage| {
            let text = message.text().map_or(0, |text| text.len()) as u64;
            text + message.role.as_str().len() as u64 + TEMPLATE_TOKENS_PER_MESSAGE
        };
        self.messages.iter().map(per_message).sum::<u64>() + TEMPLATE_TOKENS_PER_MESSAGE
    }

    /// A rewritten message becomes plain text (its parts are joined).
    fn visit_prompt_texts(&mut self, visit: &mut dyn FnMut(&mut String)) -> Result<(), ApiError> {
        for message in &mut self.messages {
            let original = message.text()?;
            let mut text = original.clone();
            visit(&mut text);
            if text != original {
                message.content = Some(MessageContent::Text(text));
            }
        }
        Ok(())
    }

    fn prompt_text(&self) -> String {
        self.messages.iter().filter_map(|m| m.text().ok()).collect::<Vec<_>>().join("\n")
    }

    fn as_chat_mut(&mut self) -> Option<&mut ChatCompletionRequest> {
        Some(self)
    }
}

fn sampled_logprobs(logprobs: Option<&ChatLogprobs>) -> Vec<f32> {
    logprobs.map(|l| l.content.iter().map(|entry| entry.logprob).collect()).unwrap_or_default()
}

impl ApiReply for ChatCompletionResponse {
    common_reply_fields!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| !choice.message.content.is_empty() || choice.message.tool_calls.is_some())
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

    fn texts_mut(&mut self) -> Vec<ChoiceText<'_>> {
        let choices = self.choices.iter_mut();
        choices
            .map(|choice| ChoiceText {
                index: choice.index,
                logprobs: sampled_logprobs(choice.logprobs.as_ref()),
                text: TextRef::Full(&mut choice.message.content),
                finish_reason: &mut choice.finish_reason,
            })
            .collect()
    }

    fn carries_nothing(&self) -> bool {
        false
    }

    fn arguments_mut(&mut self) -> Vec<ArgumentsText<'_>> {
        let mut out = Vec::new();
        for choice in &mut self.choices {
            let index = choice.index;
            for (call, tool_call) in choice.message.tool_calls.iter_mut().flatten().enumerate() {
                out.push(ArgumentsText { choice: index, call, text: &mut tool_call.function.arguments });
            }
        }
        out
    }

    fn clear_calls(&mut self, choice: usize) {
        self.choices.iter_mut().filter(|c| c.index == choice).for_each(|c| c.message.tool_calls = None);
    }

    fn tool_calls_started(&self) -> u64 {
        self.choices.iter().map(|c| c.message.tool_calls.as_ref().map_or(0, Vec::len) as u64).sum()
    }
}

impl ApiReply for ChatCompletionChunk {
    common_reply_fields!();

    optional_usage!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| {
            choice.delta.content.as_deref().is_some_and(|text| !text.is_empty()) || choice.delta.tool_calls.is_some()
        })
    }

    fn texts_mut(&mut self) -> Vec<ChoiceText<'_>> {
        let choices = self.choices.iter_mut();
        choices
            .map(|choice| ChoiceText {
                index: choice.index,
                logprobs: sampled_logprobs(choice.logprobs.as_ref()),
                text: TextRef::Delta { content: &mut choice.delta.content, opens: choice.delta.role.is_some() },
                finish_reason: &mut choice.finish_reason,
            })
            .collect()
    }

    fn carries_nothing(&self) -> bool {
        let shows = |c: &ChatChunkChoice| {
            c.delta.content.is_some()
                || c.delta.role.is_some()
                || c.delta.tool_calls.is_some()
                || c.finish_reason.is_some()
                || c.logprobs.is_some()
        };
        !self.choices.is_empty() && !self.choices.iter().any(shows)
    }

    fn arguments_mut(&mut self) -> Vec<ArgumentsText<'_>> {
        let mut out = Vec::new();
        for choice in &mut self.choices {
            let index = choice.index;
            for delta in choice.delta.tool_calls.iter_mut().flatten() {
                let call = delta.index;
                if let Some(text) = delta.function.as_mut().and_then(|function| function.arguments.as_mut()) {
                    out.push(ArgumentsText { choice: index, call, text });
                }
            }
        }
        out
    }

    fn push_arguments(&mut self, choice: usize, call: usize, text: String) {
        let Some(target) = self.choices.iter_mut().find(|c| c.index == choice) else { return };
        let function = FunctionCallDelta { name: None, arguments: Some(text) };
        let delta = ToolCallDelta { index: call, id: None, kind: None, function: Some(function) };
        target.delta.tool_calls.get_or_insert_with(Vec::new).push(delta);
    }

    fn clear_calls(&mut self, choice: usize) {
        self.choices.iter_mut().filter(|c| c.index == choice).for_each(|c| c.delta.tool_calls = None);
    }

    fn tool_calls_started(&self) -> u64 {
        let starts = self.choices.iter().flat_map(|c| c.delta.tool_calls.iter().flatten()).filter(|d| d.id.is_some());
        starts.count() as u64
    }
}

/// The full response of a finished stream: texts and logprobs joined per choice.
pub fn fold(chunks: Vec<ChatCompletionChunk>) -> Option<ChatCompletionResponse> {
    let head = chunks.first()?.clone();
    let mut choices: Vec<Option<ChatChoice>> = Vec::new();
    let mut usage = None;
    for chunk in chunks {
        if let Some(Some(total)) = chunk.usage {
            usage = Some(total);
        }
        for piece in chunk.choices {
            let choice = slot(&mut choices, piece.index).get_or_insert_with(|| empty_choice(piece.index));
            if let Some(content) = piece.delta.content {
                choice.message.content.push_str(&content);
            }
            if let Some(calls) = piece.delta.tool_calls {
                fold_tool_calls(choice.message.tool_calls.get_or_insert_with(Vec::new), calls);
            }
            if let Some(logprobs) = piece.logprobs {
                choice.logprobs.get_or_insert_with(ChatLogprobs::default).content.extend(logprobs.content);
            }
            if piece.finish_reason.is_some() {
                choice.finish_reason = piece.finish_reason;
            }
        }
    }
    let choices = choices.into_iter().enumerate().map(|(i, c)| c.unwrap_or_else(|| empty_choice(i))).collect();
    Some(ChatCompletionResponse {
        id: head.id,
        object: CHAT_OBJECT.into(),
        created: head.created,
        model: head.model,
        choices,
        usage: usage?,
    })
}

fn empty_choice(index: usize) -> ChatChoice {
    ChatChoice { index, message: AssistantMessage::text(""), logprobs: None, finish_reason: None }
}

/// Per choice: the role, one chunk per piece of text, the finish; then the usage chunk.
pub fn replay(response: &ChatCompletionResponse) -> Vec<ChatCompletionChunk> {
    let chunk = |choices: Vec<ChatChunkChoice>, usage: Option<Option<Usage>>| ChatCompletionChunk {
        id: response.id.clone(),
        object: CHAT_CHUNK_OBJECT.into(),
        created: response.created,
        model: response.model.clone(),
        choices,
        usage,
    };
    let piece = |index, role, content, finish_reason| ChatChunkChoice {
        index,
        delta: ChatDelta { role, content, tool_calls: None },
        logprobs: None,
        finish_reason,
    };
    let mut chunks = Vec::new();
    for choice in &response.choices {
        let index = choice.index;
        chunks.push(chunk(vec![piece(index, Some(Role::Assistant), Some(String::new()), None)], None));
        for text in split_pieces(&choice.message.content) {
            chunks.push(chunk(vec![piece(index, None, Some(text), None)], None));
        }
        if let Some(calls) = choice.message.tool_calls.as_deref().filter(|calls| !calls.is_empty()) {
            let mut calls_piece = piece(index, None, None, None);
            calls_piece.delta.tool_calls = Some(tool_call_deltas(calls));
            chunks.push(chunk(vec![calls_piece], None));
        }
        chunks.push(chunk(vec![piece(index, None, None, choice.finish_reason.clone())], None));
    }
    chunks.push(chunk(Vec::new(), Some(Some(response.usage))));
    chunks
}

pub fn text_response(id: String, model: &str, text: &str) -> ChatCompletionResponse {
    let mut choice = empty_choice(0);
    choice.message.content = text.into();
    choice.finish_reason = Some("stop".into());
    ChatCompletionResponse {
        id,
        object: CHAT_OBJECT.into(),
        created: crate::usage::unix_now().max(0).unsigned_abs(),
        model: model.into(),
        choices: vec![choice],
        usage: Usage::new(0, 0, 0),
    }
}
