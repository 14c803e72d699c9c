//! `/v1/completions` on the local engine: text or token prompts, batches, `echo` and
//! legacy logprobs.

use std::collections::BTreeMap;

use sconce_gateway::Completions;
use sconce_protocol::completion::{
    CompletionChoice, CompletionRequest, CompletionResponse, PromptInput, COMPLETION_OBJECT, DEFAULT_COMPLETION_TOKENS,
};
use sconce_protocol::logprobs::CompletionLogprobs;
use sconce_protocol::{ApiError, RequestLimits, Usage};

use super::spec::{GenerationSpec, ResponseMeta};
use super::stream::ResponseFormat;
use super::tools::output_constraint;
use super::{LocalApi, Prepared};
use crate::backend::{Backend, Delta, TokenLogprob, TokenText};

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

impl LocalApi for Completions {
    type Format = CompletionFormat;

    fn constrains(request: &CompletionRequest) -> bool {
        request.sampling.output_constraint().is_ok_and(|c| c.is_some())
    }

    fn prepare(
        backend: &Backend,
        request: &CompletionRequest,
        id: &str,
        meta: ResponseMeta,
        limits: &RequestLimits,
    ) -> Result<Prepared<CompletionFormat>, ApiError> {
        request.validate(limits)?;
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
            logprobs_param: "logprobs",
            limits,
            constraint: output_constraint(backend, &request.sampling)?,
        };
        let token_prompts = prompts.iter().map(|prompt| prompt.tokens.clone()).collect();
        let requests = spec.requests(id, token_prompts, backend.info())?;
        let choices = prompts.len() * request.sampling.choices();
        let format = CompletionFormat::new(meta, backend.token_text(), request, prompts, choices);
        Ok(Prepared { format, requests })
    }
}

/// Per-choice progress while streaming.
#[derive(Default, Clone)]
struct ChoiceProgress {
    started: bool,
    /// Characters of text sent so far (for `text_offset`).
    chars: usize,
}

pub struct CompletionFormat {
    meta: ResponseMeta,
    tokens: TokenText,
    include_usage: bool,
    continuous_usage: bool,
    echo: bool,
    logprobs: bool,
    prompts: Vec<PreparedPrompt>,
    choices_per_prompt: usize,
    /// Prompt logprobs per prompt, as they arrive on its first delta.
    prompt_logprobs: Vec<Option<Vec<Option<TokenLogprob>>>>,
    progress: Vec<ChoiceProgress>,
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
            continuous_usage: request.sampling.continuous_usage(),
            echo: request.echo(),
            logprobs: request.logprobs.is_some(),
            prompt_logprobs: vec![None; prompts.len()],
            choices_per_prompt: request.sampling.choices(),
            prompts,
            progress: vec![ChoiceProgress::default(); choices],
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

    fn opening(&mut self, _choices: usize) -> Vec<CompletionResponse> {
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

    fn continuous_usage(&self) -> bool {
        self.continuous_usage
    }

    fn set_usage(chunk: &mut CompletionResponse, usage: Usage) {
        chunk.usage = Some(Some(usage));
    }
}
