//! `/v1/chat/completions` as the stages see it.

use sconce_protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatDelta, ChatMessage, MessageContent, Role, CHAT_CHUNK_OBJECT, CHAT_OBJECT,
};
use sconce_protocol::logprobs::ChatLogprobs;
use sconce_protocol::{ApiError, RequestLimits, SamplingOptions, Usage};

use super::{bytes_to_tokens, slot, split_pieces, ApiReply, ApiRequest, ChoiceText, TextRef};

/// Room for a chat template's markers around one message (and the generation prompt).
const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 8;

impl ApiRequest for ChatCompletionRequest {
    const PROMPT_PARAM: &'static str = "messages";

    common_request_fields!();

    /// A registry `prompt` may stand in for the messages (the prompt stage renders them).
    fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        if self.prompt.is_some() && self.messages.is_empty() {
            let mut probe = self.clone();
            probe.messages.push(ChatMessage { role: Role::User, content: None, name: None });
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
        self.choices.iter().any(|choice| !choice.message.content.is_empty())
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
}

impl ApiReply for ChatCompletionChunk {
    common_reply_fields!();

    optional_usage!();

    fn shows_text(&self) -> bool {
        self.choices.iter().any(|choice| choice.delta.content.as_deref().is_some_and(|text| !text.is_empty()))
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
            c.delta.content.is_some() || c.delta.role.is_some() || c.finish_reason.is_some() || c.logprobs.is_some()
        };
        !self.choices.is_empty() && !self.choices.iter().any(shows)
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
    ChatChoice {
        index,
        message: AssistantMessage { role: Role::Assistant, content: String::new() },
        logprobs: None,
        finish_reason: None,
    }
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
        delta: ChatDelta { role, content },
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
