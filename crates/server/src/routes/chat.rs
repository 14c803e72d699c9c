//! `POST /v1/chat/completions`.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use sconce_protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatDelta, Role, CHAT_CHUNK_OBJECT, CHAT_OBJECT,
};
use sconce_protocol::logprobs::{ChatLogprobs, ChatTokenLogprob, TopLogprob};
use sconce_protocol::{ApiError, Usage};

use crate::backend::{Delta, TokenLogprob, TokenText};
use crate::gateway::http::Caller;
use crate::generation::{self, DeltaStream, GenerationSpec, ResponseMeta};
use crate::http::{ApiJson, HttpError};
use crate::respond::{self, ResponseFormat};
use crate::state::AppState;

pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<ChatCompletionRequest>,
) -> Result<Response, HttpError> {
    if let Some(gateway) = state.gateway() {
        let hints = crate::gateway::stages::hints(&headers);
        return Ok(crate::gateway::http::chat(gateway, caller.map(|Extension(caller)| caller), request, hints).await);
    }
    let (format, deltas) = prepare(&state, &request)?;
    let sampling = &request.sampling;
    Ok(respond::answer(format, deltas, sampling.is_stream(), sampling.include_usage()).await?)
}

/// Validates, tokenizes and submits one chat request.
pub(crate) fn prepare(
    state: &AppState,
    request: &ChatCompletionRequest,
) -> Result<(ChatFormat, DeltaStream), ApiError> {
    if request.prompt.is_some() {
        // The gateway's prompt stage replaces `prompt` with messages before this point.
        let message = "the prompt registry needs the gateway: set `[gateway] enabled = true`";
        return Err(ApiError::invalid_param("prompt", message).with_code("gateway_disabled"));
    }
    request.validate()?;
    let backend = state.serving_backend()?;
    state.check_model(backend, request.model.as_deref())?;
    let messages = request
        .messages
        .iter()
        .map(|message| Ok((message.role.as_str().to_string(), message.text()?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let prompt = backend.encode_chat(messages, request.add_generation_prompt.unwrap_or(true))?;
    let spec = GenerationSpec {
        sampling: &request.sampling,
        max_tokens: request.max_tokens(),
        default_max_tokens: None,
        logprobs: request.logprobs_count(),
        prompt_logprobs: None,
        prompt_param: "messages",
    };
    let meta = ResponseMeta::new("chatcmpl", &backend.info().name);
    let deltas = generation::start(state, backend, &meta, vec![prompt], &spec)?;
    let format = ChatFormat {
        meta,
        tokens: backend.token_text(),
        include_usage: request.sampling.include_usage(),
        logprobs: request.logprobs_count().is_some(),
        choices: Vec::new(),
    };
    Ok((format, deltas))
}

pub(crate) struct ChatFormat {
    meta: ResponseMeta,
    tokens: TokenText,
    include_usage: bool,
    logprobs: bool,
    /// The non-streamed response being assembled.
    choices: Vec<ChatChoice>,
}

impl ChatFormat {
    fn chunk_of(&self, choices: Vec<ChatChunkChoice>, usage: Option<Option<Usage>>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: CHAT_CHUNK_OBJECT.to_string(),
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage,
        }
    }

    fn token_logprobs(&self, logprobs: &[TokenLogprob]) -> ChatLogprobs {
        let content = logprobs
            .iter()
            .map(|entry| {
                let token = self.tokens.token(entry.token_id);
                ChatTokenLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: entry.logprob,
                    top_logprobs: entry.top.iter().map(|&(id, logprob)| self.top(id, logprob)).collect(),
                }
            })
            .collect();
        ChatLogprobs { content }
    }

    fn top(&self, id: u32, logprob: f32) -> TopLogprob {
        let token = self.tokens.token(id);
        TopLogprob { bytes: token.as_bytes().to_vec(), token, logprob }
    }
}

fn empty_choice(index: usize) -> ChatChoice {
    ChatChoice {
        index,
        message: AssistantMessage { role: Role::Assistant, content: String::new() },
        logprobs: None,
        finish_reason: None,
    }
}

impl ResponseFormat for ChatFormat {
    type Chunk = ChatCompletionChunk;
    type Response = ChatCompletionResponse;

    fn opening(&mut self, choices: usize) -> Vec<ChatCompletionChunk> {
        self.choices = (0..choices).map(empty_choice).collect();
        let usage = self.include_usage.then_some(None);
        (0..choices)
            .map(|index| {
                let delta = ChatDelta { role: Some(Role::Assistant), content: Some(String::new()) };
                let choice = ChatChunkChoice { index, delta, logprobs: None, finish_reason: None };
                self.chunk_of(vec![choice], usage)
            })
            .collect()
    }

    fn chunk(&mut self, delta: &Delta) -> Option<ChatCompletionChunk> {
        let finish_reason = delta.finish_reason.map(|reason| reason.as_str().to_string());
        let logprobs = (self.logprobs && !delta.logprobs.is_empty()).then(|| self.token_logprobs(&delta.logprobs));
        if delta.text.is_empty() && finish_reason.is_none() && logprobs.is_none() {
            return None;
        }
        let content = (!delta.text.is_empty()).then(|| delta.text.clone());
        let choice =
            ChatChunkChoice { index: delta.index, delta: ChatDelta { role: None, content }, logprobs, finish_reason };
        Some(self.chunk_of(vec![choice], self.include_usage.then_some(None)))
    }

    fn usage_chunk(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk_of(Vec::new(), Some(Some(usage)))
    }

    fn absorb(&mut self, chunk: ChatCompletionChunk) {
        for piece in chunk.choices {
            let Some(choice) = self.choices.get_mut(piece.index) else {
                continue;
            };
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

    fn into_response(self, usage: Usage) -> ChatCompletionResponse {
        let logprobs = self.logprobs;
        let choices = self
            .choices
            .into_iter()
            .map(|mut choice| {
                if logprobs {
                    choice.logprobs.get_or_insert_with(ChatLogprobs::default);
                }
                choice
            })
            .collect();
        ChatCompletionResponse {
            id: self.meta.id,
            object: CHAT_OBJECT.to_string(),
            created: self.meta.created,
            model: self.meta.model,
            choices,
            usage,
        }
    }
}
