//! `/v1/chat/completions` on the local engine: messages through the chat template, and
//! deltas shaped into chat chunks.

use sconce_gateway::Chat;
use sconce_protocol::chat::{
    ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatDelta, Role,
    CHAT_CHUNK_OBJECT,
};
use sconce_protocol::logprobs::{ChatLogprobs, ChatTokenLogprob, TopLogprob};
use sconce_protocol::{ApiError, RequestLimits, Usage};

use super::spec::{GenerationSpec, ResponseMeta};
use super::stream::ResponseFormat;
use super::tool_stream::ToolCalls;
use super::tools::plan_chat;
use super::{LocalApi, Prepared};
use crate::backend::{Backend, Delta, TokenLogprob, TokenText};
use sconce_text::tool_calls::ToolCallFormat;

impl LocalApi for Chat {
    type Format = ChatFormat;

    fn prepare(
        backend: &Backend,
        request: &ChatCompletionRequest,
        id: &str,
        meta: ResponseMeta,
        limits: &RequestLimits,
    ) -> Result<Prepared<ChatFormat>, ApiError> {
        if request.prompt.is_some() {
            // The gateway's prompt stage replaces `prompt` with messages before this point.
            let message = "the prompt registry needs the gateway: set `[gateway] enabled = true`";
            return Err(ApiError::invalid_param("prompt", message).with_code("gateway_disabled"));
        }
        request.validate(limits)?;
        let plan = plan_chat(backend, request)?;
        let add_generation_prompt = request.add_generation_prompt.unwrap_or(true);
        let prompt = backend.encode_chat_messages(&plan.messages, add_generation_prompt, &plan.context)?;
        let mut sampling = request.sampling.clone();
        if plan.calls == Some(ToolCallFormat::Mistral) {
            // `[TOOL_CALLS]` is a special token: keep it in the text the parser reads.
            sampling.skip_special_tokens = Some(false);
        }
        let spec = GenerationSpec {
            sampling: &sampling,
            max_tokens: request.max_tokens(),
            default_max_tokens: None,
            logprobs: request.logprobs_count(),
            prompt_logprobs: None,
            prompt_param: "messages",
            logprobs_param: "top_logprobs",
            limits,
            constraint: plan.constraint,
        };
        let requests = spec.requests(id, vec![prompt], backend.info())?;
        let format = ChatFormat {
            calls: ToolCalls::new(plan.calls, &meta.id),
            meta,
            tokens: backend.token_text(),
            include_usage: request.sampling.include_usage(),
            continuous_usage: request.sampling.continuous_usage(),
            logprobs: request.logprobs_count().is_some(),
        };
        Ok(Prepared { format, requests })
    }

    fn constrains(request: &ChatCompletionRequest) -> bool {
        request.tools.as_ref().is_some_and(|tools| !tools.is_empty())
            || request.sampling.output_constraint().is_ok_and(|c| c.is_some())
    }

    /// Asked-for logprobs are present even when no token came.
    fn finish(request: &ChatCompletionRequest, response: &mut ChatCompletionResponse) {
        if request.logprobs_count().is_some() {
            for choice in &mut response.choices {
                choice.logprobs.get_or_insert_with(ChatLogprobs::default);
            }
        }
    }
}

pub struct ChatFormat {
    calls: ToolCalls,
    meta: ResponseMeta,
    tokens: TokenText,
    include_usage: bool,
    continuous_usage: bool,
    logprobs: bool,
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

impl ResponseFormat for ChatFormat {
    type Chunk = ChatCompletionChunk;

    fn opening(&mut self, choices: usize) -> Vec<ChatCompletionChunk> {
        let usage = self.include_usage.then_some(None);
        (0..choices)
            .map(|index| {
                let delta = ChatDelta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None };
                let choice = ChatChunkChoice { index, delta, logprobs: None, finish_reason: None };
                self.chunk_of(vec![choice], usage)
            })
            .collect()
    }

    fn chunk(&mut self, delta: &Delta) -> Option<ChatCompletionChunk> {
        let logprobs = (self.logprobs && !delta.logprobs.is_empty()).then(|| self.token_logprobs(&delta.logprobs));
        let (text, tool_calls, finish_reason) = self.calls.read(delta);
        if text.is_empty() && tool_calls.is_none() && finish_reason.is_none() && logprobs.is_none() {
            return None;
        }
        let content = (!text.is_empty()).then_some(text);
        let index = delta.index;
        let delta = ChatDelta { role: None, content, tool_calls };
        let choice = ChatChunkChoice { index, delta, logprobs, finish_reason };
        Some(self.chunk_of(vec![choice], self.include_usage.then_some(None)))
    }

    fn usage_chunk(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk_of(Vec::new(), Some(Some(usage)))
    }

    fn continuous_usage(&self) -> bool {
        self.continuous_usage
    }

    fn set_usage(chunk: &mut ChatCompletionChunk, usage: Usage) {
        chunk.usage = Some(Some(usage));
    }
}
