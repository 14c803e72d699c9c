//! `POST /v1/completions`: text or token prompts, batches, `echo` and legacy logprobs.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use sconce_protocol::completion::{
    CompletionChoice, CompletionRequest, CompletionResponse, PromptInput, COMPLETION_OBJECT, DEFAULT_COMPLETION_TOKENS,
};
use sconce_protocol::logprobs::CompletionLogprobs;
use sconce_protocol::{ApiError, Usage};

use crate::backend::{Backend, Delta, TokenLogprob, TokenText};
use crate::gateway::http::Caller;
use crate::generation::{self, DeltaStream, GenerationSpec, ResponseMeta};
use crate::http::{ApiJson, HttpError};
use crate::respond::{self, ResponseFormat};
use crate::state::AppState;

/// One prompt as tokenized, with the text `echo` repeats.
struct PreparedPrompt {
    tokens: Vec<u32>,
    text: String,
}

fn prepare_prompt(backend: &Backend, input: PromptInput, echo: bool) -> Result<PreparedPrompt, ApiError> {
    match input {
        PromptInput::Text(text) => Ok(PreparedPrompt { tokens: backend.encode_text(&text, true)?, text }),
        PromptInput::Tokens(tokens) => {
            let text = if echo { backend.decode(&tokens)? } else { String::new() };
            Ok(PreparedPrompt { tokens, text })
        }
    }
}

pub async fn completions(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response, HttpError> {
    if let Some(gateway) = state.gateway() {
        let caller = caller.map(|Extension(caller)| caller);
        return Ok(crate::gateway::http::completions(&state, gateway, caller, request).await);
    }
    let (format, deltas) = prepare(&state, &request)?;
    let sampling = &request.sampling;
    Ok(respond::answer(format, deltas, sampling.is_stream(), sampling.include_usage()).await?)
}

/// Validates, tokenizes and submits one completions request (a batch of prompts).
pub(crate) fn prepare(
    state: &AppState,
    request: &CompletionRequest,
) -> Result<(CompletionFormat, DeltaStream), ApiError> {
    request.validate()?;
    let backend = state.serving_backend()?;
    state.check_model(backend, request.model.as_deref())?;
    let echo = request.echo();
    let prompts = request
        .prompt
        .clone()
        .into_inputs()
        .into_iter()
        .map(|input| prepare_prompt(backend, input, echo))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = GenerationSpec {
        sampling: &request.sampling,
        max_tokens: request.sampling.max_tokens,
        default_max_tokens: Some(DEFAULT_COMPLETION_TOKENS),
        logprobs: request.logprobs,
        prompt_logprobs: if echo { request.logprobs } else { None },
        prompt_param: "prompt",
    };
    let meta = ResponseMeta::new("cmpl", &backend.info().name);
    let token_prompts = prompts.iter().map(|prompt| prompt.tokens.clone()).collect();
    let deltas = generation::start(state, backend, &meta, token_prompts, &spec)?;
    let format = CompletionFormat::new(meta, backend.token_text(), request, prompts, deltas.choices());
    Ok((format, deltas))
}

/// Per-choice progress while streaming.
#[derive(Default, Clone)]
struct ChoiceProgress {
    started: bool,
    /// Characters of text sent so far (for `text_offset`).
    chars: usize,
}

pub(crate) struct CompletionFormat {
    meta: ResponseMeta,
    tokens: TokenText,
    include_usage: bool,
    echo: bool,
    logprobs: bool,
    prompts: Vec<PreparedPrompt>,
    choices_per_prompt: usize,
    /// Prompt logprobs per prompt, as they arrive on its first delta.
    prompt_logprobs: Vec<Option<Vec<Option<TokenLogprob>>>>,
    progress: Vec<ChoiceProgress>,
    choices: Vec<CompletionChoice>,
}

impl CompletionFormat {
    fn new(
        meta: ResponseMeta,
        tokens: TokenText,
        request: &CompletionRequest,
        prompts: Vec<PreparedPrompt>,
        choices: usize,
    ) -> Self {
        Self {
            meta,
            tokens,
            include_usage: request.sampling.include_usage(),
            echo: request.echo(),
            logprobs: request.logprobs.is_some(),
            prompt_logprobs: vec![None; prompts.len()],
            choices_per_prompt: request.sampling.choices(),
            prompts,
            progress: vec![ChoiceProgress::default(); choices],
            choices: Vec::new(),
        }
    }

    fn response_of(&self, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> CompletionResponse {
        CompletionResponse {
            id: self.meta.id.clone(),
            object: COMPLETION_OBJECT.to_string(),
            created: self.meta.created,
            model: self.meta.model.clone(),
            choices,
            usage,
        }
    }

    /// The sampled token plus its top alternatives, as the legacy dict.
    fn top_map(&self, entry: &TokenLogprob) -> BTreeMap<String, f32> {
        let mut top: BTreeMap<String, f32> =
            entry.top.iter().map(|&(id, logprob)| (self.tokens.token(id), logprob)).collect();
        top.insert(self.tokens.token(entry.token_id), entry.logprob);
        top
    }

    /// Appends `token_ids` with their logprobs (when known), starting at text offset `offset`.
    fn push_tokens(
        &self,
        out: &mut CompletionLogprobs,
        token_ids: &[u32],
        logprobs: &[Option<TokenLogprob>],
        mut offset: usize,
    ) {
        for (position, &id) in token_ids.iter().enumerate() {
            let token = self.tokens.token(id);
            let entry = logprobs.get(position).and_then(Option::as_ref);
            let chars = token.chars().count();
            out.push(token, entry.map(|e| e.logprob), entry.map(|e| self.top_map(e)), offset);
            offset += chars;
        }
    }

    /// The echoed prompt text and its logprobs, sent before a choice's first token.
    fn echo_prefix(&self, prompt: usize, logprobs: Option<&mut CompletionLogprobs>) -> String {
        let Some(prepared) = self.prompts.get(prompt) else {
            return String::new();
        };
        if let Some(out) = logprobs {
            let known = self.prompt_logprobs.get(prompt).and_then(Option::as_deref).unwrap_or_default();
            self.push_tokens(out, &prepared.tokens, known, 0);
        }
        prepared.text.clone()
    }
}

impl ResponseFormat for CompletionFormat {
    type Chunk = CompletionResponse;
    type Response = CompletionResponse;

    fn opening(&mut self, choices: usize) -> Vec<CompletionResponse> {
        self.choices = (0..choices)
            .map(|index| CompletionChoice { index, text: String::new(), logprobs: None, finish_reason: None })
            .collect();
        Vec::new()
    }

    fn chunk(&mut self, delta: &Delta) -> Option<CompletionResponse> {
        let prompt = delta.index / self.choices_per_prompt.max(1);
        if let (Some(known), Some(slot)) = (&delta.prompt_logprobs, self.prompt_logprobs.get_mut(prompt)) {
            *slot = Some(known.clone());
        }
        let progress = self.progress.get(delta.index).cloned().unwrap_or_default();
        let mut logprobs = self.logprobs.then(CompletionLogprobs::default);
        let mut text =
            if !progress.started && self.echo { self.echo_prefix(prompt, logprobs.as_mut()) } else { String::new() };
        if let Some(out) = logprobs.as_mut() {
            let generated: Vec<Option<TokenLogprob>> = delta.logprobs.iter().cloned().map(Some).collect();
            let ids: Vec<u32> = delta.logprobs.iter().map(|entry| entry.token_id).collect();
            self.push_tokens(out, &ids, &generated, progress.chars + text.chars().count());
        }
        text.push_str(&delta.text);
        if let Some(slot) = self.progress.get_mut(delta.index) {
            slot.started = true;
            slot.chars += text.chars().count();
        }
        let finish_reason = delta.finish_reason.map(|reason| reason.as_str().to_string());
        let has_logprobs = logprobs.as_ref().is_some_and(|out| !out.tokens.is_empty());
        if text.is_empty() && finish_reason.is_none() && !has_logprobs {
            return None;
        }
        let choice = CompletionChoice { index: delta.index, text, logprobs, finish_reason };
        Some(self.response_of(vec![choice], self.include_usage.then_some(None)))
    }

    fn usage_chunk(&self, usage: Usage) -> CompletionResponse {
        self.response_of(Vec::new(), Some(Some(usage)))
    }

    fn absorb(&mut self, chunk: CompletionResponse) {
        for piece in chunk.choices {
            let Some(choice) = self.choices.get_mut(piece.index) else {
                continue;
            };
            choice.text.push_str(&piece.text);
            if let Some(logprobs) = piece.logprobs {
                let out = choice.logprobs.get_or_insert_with(CompletionLogprobs::default);
                out.tokens.extend(logprobs.tokens);
                out.token_logprobs.extend(logprobs.token_logprobs);
                out.top_logprobs.extend(logprobs.top_logprobs);
                out.text_offset.extend(logprobs.text_offset);
            }
            if piece.finish_reason.is_some() {
                choice.finish_reason = piece.finish_reason;
            }
        }
    }

    fn into_response(self, usage: Usage) -> CompletionResponse {
        let mut response = self.response_of(Vec::new(), Some(Some(usage)));
        response.choices = self.choices;
        response
    }
}
