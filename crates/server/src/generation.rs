//! The engine-request builder shared by chat and completions, and the tracked stream
//! of deltas that feeds both the SSE and the non-streamed responses.

use std::time::Instant;

use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
use sconce_protocol::{ApiError, SamplingOptions, Usage};

use crate::backend::{Backend, Delta, EngineError, GenerateRequest, RequestStream, SamplingParams};
use crate::state::{unix_now, AppState, InFlightGuard};

/// What an endpoint asks of the engine beyond the shared sampling fields.
pub struct GenerationSpec<'a> {
    pub sampling: &'a SamplingOptions,
    pub max_tokens: Option<usize>,
    /// Used when `max_tokens` is absent; `None` means the rest of the context.
    pub default_max_tokens: Option<usize>,
    /// Top alternatives per generated token, when logprobs are wanted.
    pub logprobs: Option<usize>,
    /// Top alternatives per prompt token, when prompt logprobs are wanted.
    pub prompt_logprobs: Option<usize>,
    /// The request field that holds the prompt (`messages` or `prompt`), for errors.
    pub prompt_param: &'static str,
}

impl GenerationSpec<'_> {
    fn max_tokens(&self, prompt_len: usize, max_model_len: usize) -> usize {
        let room = max_model_len.saturating_sub(prompt_len).max(1);
        match (self.max_tokens, self.default_max_tokens) {
            (Some(max_tokens), _) => max_tokens,
            (None, Some(default)) => default.min(room),
            (None, None) => room,
        }
    }

    /// Engine sampling parameters for one prompt of `prompt_len` tokens.
    pub fn sampling_params(&self, prompt_len: usize, max_model_len: usize) -> Result<SamplingParams, ApiError> {
        let options = self.sampling;
        let defaults = SamplingParams::default();
        Ok(SamplingParams {
            n: options.choices(),
            temperature: options.temperature.unwrap_or(defaults.temperature),
            top_p: options.top_p.unwrap_or(defaults.top_p),
            top_k: options.top_k.map_or(0, |top_k| top_k.max(0) as usize),
            min_p: options.min_p.unwrap_or(defaults.min_p),
            repetition_penalty: options.repetition_penalty.unwrap_or(defaults.repetition_penalty),
            presence_penalty: options.presence_penalty.unwrap_or(0.0),
            frequency_penalty: options.frequency_penalty.unwrap_or(0.0),
            logit_bias: options.parsed_logit_bias()?,
            seed: options.seed.map(|seed| seed as u64),
            logprobs: self.logprobs,
            prompt_logprobs: self.prompt_logprobs,
            max_tokens: self.max_tokens(prompt_len, max_model_len),
            min_tokens: options.min_tokens.unwrap_or(0),
            stop: options.stop.as_ref().map(|stop| stop.to_vec()).unwrap_or_default(),
            stop_token_ids: options.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: options.ignore_eos.unwrap_or(false),
            skip_special_tokens: options.skip_special_tokens.unwrap_or(true),
            include_stop_str_in_output: options.include_stop_str_in_output.unwrap_or(false),
        })
    }
}

/// The id, creation time and model name repeated on every chunk of one response.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl ResponseMeta {
    pub fn new(prefix: &str, model: &str) -> Self {
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        Self { id, created: unix_now(), model: model.to_string() }
    }
}

/// Submits one engine request per prompt; choice `c` of prompt `p` becomes index `p * n + c`.
pub fn start(
    state: &AppState,
    backend: &Backend,
    meta: &ResponseMeta,
    prompts: Vec<Vec<u32>>,
    spec: &GenerationSpec<'_>,
) -> Result<DeltaStream, ApiError> {
    let choices_per_prompt = spec.sampling.choices();
    let max_model_len = backend.info().max_model_len;
    let guard = state.track_request();
    let mut merged = SelectAll::new();
    let prompt_count = prompts.len();
    let prompt_lens = prompts.iter().map(Vec::len).collect();
    for (prompt_index, prompt) in prompts.into_iter().enumerate() {
        let params = spec.sampling_params(prompt.len(), max_model_len)?;
        let id = if prompt_count == 1 { meta.id.clone() } else { format!("{}-{prompt_index}", meta.id) };
        let request = GenerateRequest { id, prompt, params, priority: spec.sampling.priority.unwrap_or(0) };
        let stream = backend.submit(request).map_err(|e| engine_error(e, spec.prompt_param))?;
        merged.push(renumbered(stream, prompt_index * choices_per_prompt));
    }
    Ok(DeltaStream::new(state.clone(), meta.id.clone(), merged, prompt_lens, choices_per_prompt, guard))
}

fn renumbered(stream: RequestStream, offset: usize) -> BoxStream<'static, Delta> {
    futures_util::stream::unfold(stream, move |mut stream| async move {
        let mut delta = stream.next().await?;
        delta.index += offset;
        Some((delta, stream))
    })
    .boxed()
}

pub fn engine_error(error: EngineError, prompt_param: &str) -> ApiError {
    let message = error.to_string();
    match error {
        EngineError::ContextLengthExceeded { .. } => {
            ApiError::context_length_exceeded(message).with_param(prompt_param)
        }
        EngineError::EmptyPrompt | EngineError::InvalidToken(_) => ApiError::invalid_param(prompt_param, message),
        EngineError::InvalidParam { param, message } => ApiError::invalid_param(param, message),
        EngineError::Overloaded(_) => ApiError::overloaded(message),
        EngineError::Stopped => ApiError::unavailable(message),
        EngineError::DuplicateId(_) | EngineError::Load(_) | EngineError::Internal(_) => ApiError::internal(message),
    }
}

/// Called on every delta of a [`DeltaStream`] (the gateway reads engine timings).
type DeltaHook = Box<dyn Fn(&Delta) + Send>;

/// All deltas of one API request, merged across prompts, with metrics and usage
/// tallied on the way. Dropping it aborts whatever is still generating.
pub struct DeltaStream {
    state: AppState,
    id: String,
    merged: SelectAll<BoxStream<'static, Delta>>,
    choices_per_prompt: usize,
    unfinished: usize,
    prompt_usage: Vec<Option<(usize, usize)>>,
    prompt_lens: Vec<usize>,
    completion_tokens: usize,
    /// Tokens of each choice not yet counted in `completion_tokens` (it is still running).
    open_tokens: Vec<usize>,
    last_token_at: Vec<Option<Instant>>,
    hook: Option<DeltaHook>,
    _in_flight: InFlightGuard,
}

impl DeltaStream {
    fn new(
        state: AppState,
        id: String,
        merged: SelectAll<BoxStream<'static, Delta>>,
        prompt_lens: Vec<usize>,
        choices_per_prompt: usize,
        guard: InFlightGuard,
    ) -> Self {
        let prompts = prompt_lens.len();
        let choices = prompts * choices_per_prompt;
        Self {
            state,
            id,
            merged,
            choices_per_prompt,
            unfinished: choices,
            prompt_usage: vec![None; prompts],
            prompt_lens,
            completion_tokens: 0,
            open_tokens: vec![0; choices],
            last_token_at: vec![None; choices],
            hook: None,
            _in_flight: guard,
        }
    }

    /// Calls `hook` on every delta as it passes.
    pub fn on_delta(mut self, hook: impl Fn(&Delta) + Send + 'static) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    pub fn choices(&self) -> usize {
        self.last_token_at.len()
    }

    pub fn choices_per_prompt(&self) -> usize {
        self.choices_per_prompt
    }

    pub async fn next(&mut self) -> Option<Delta> {
        if self.unfinished == 0 {
            return None;
        }
        let delta = self.merged.next().await?;
        self.observe(&delta);
        Some(delta)
    }

    /// True once every choice has finished (false if the engine stopped early).
    pub fn is_complete(&self) -> bool {
        self.unfinished == 0
    }

    /// Prompt tokens are counted once per prompt, completion tokens per choice.
    pub fn usage(&self) -> Usage {
        let (prompt, cached) =
            self.prompt_usage.iter().flatten().fold((0, 0), |(prompt, cached), (p, c)| (prompt + p, cached + c));
        Usage::new(prompt, self.completion_tokens, cached)
    }

    /// Usage of what was generated so far, running choices included (for an early stop).
    pub fn usage_so_far(&self) -> Usage {
        let reported = self.prompt_usage.iter().zip(&self.prompt_lens);
        let (prompt, cached) = reported
            .map(|(usage, &len)| usage.unwrap_or((len, 0)))
            .fold((0, 0), |(prompt, cached), (p, c)| (prompt + p, cached + c));
        Usage::new(prompt, self.completion_tokens + self.open_tokens.iter().sum::<usize>(), cached)
    }

    fn observe(&mut self, delta: &Delta) {
        if let Some(hook) = &self.hook {
            hook(delta);
        }
        let now = Instant::now();
        let metrics = self.state.metrics();
        if let Some(slot) = self.last_token_at.get_mut(delta.index) {
            if let (Some(previous), Some(metrics)) = (slot.replace(now), metrics) {
                metrics.observe_token_gap(now.duration_since(previous).as_secs_f64());
            }
        }
        let open = self.open_tokens.get_mut(delta.index);
        let Some(reason) = delta.finish_reason else {
            if let Some(open) = open {
                *open += delta.token_ids.len();
            }
            return;
        };
        if let Some(open) = open {
            *open = 0;
        }
        self.unfinished = self.unfinished.saturating_sub(1);
        if let Some(usage) = delta.usage {
            self.completion_tokens += usage.completion_tokens;
            let prompt = delta.index / self.choices_per_prompt.max(1);
            if let Some(slot) = self.prompt_usage.get_mut(prompt) {
                slot.get_or_insert((usage.prompt_tokens, usage.cached_tokens));
            }
        }
        if let Some(metrics) = metrics {
            metrics.observe_finish(reason.as_str(), delta.timings.as_ref());
        }
        if self.unfinished == 0 {
            let usage = self.usage();
            tracing::info!(
                id = %self.id,
                prompt_tokens = usage.prompt_tokens,
                completion_tokens = usage.completion_tokens,
                cached_tokens = usage.prompt_tokens_details.cached_tokens,
                "generation finished"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sampling: &SamplingOptions, max_tokens: Option<usize>, default: Option<usize>) -> GenerationSpec<'_> {
        GenerationSpec {
            sampling,
            max_tokens,
            default_max_tokens: default,
            logprobs: None,
            prompt_logprobs: None,
            prompt_param: "prompt",
        }
    }

    #[test]
    fn max_tokens_defaults_to_the_rest_of_the_context_or_the_endpoint_default() {
        let sampling = SamplingOptions::default();
        assert_eq!(spec(&sampling, None, None).max_tokens(10, 100), 90);
        assert_eq!(spec(&sampling, None, Some(16)).max_tokens(10, 100), 16);
        assert_eq!(spec(&sampling, None, Some(16)).max_tokens(95, 100), 5);
        assert_eq!(spec(&sampling, Some(500), Some(16)).max_tokens(10, 100), 500);
    }

    #[test]
    fn sampling_fields_map_onto_engine_params() {
        let sampling: SamplingOptions = serde_json::from_value(serde_json::json!({
            "n": 2, "temperature": 0.5, "top_k": -1, "seed": 7, "stop": "END",
            "logit_bias": {"3": 1.5}, "ignore_eos": true, "min_tokens": 4
        }))
        .unwrap();
        let params = spec(&sampling, Some(8), None).sampling_params(3, 100).unwrap();
        assert_eq!((params.n, params.temperature, params.top_k, params.seed), (2, 0.5, 0, Some(7)));
        assert_eq!(params.stop, vec!["END"]);
        assert_eq!(params.logit_bias, vec![(3, 1.5)]);
        assert!(params.ignore_eos);
        assert_eq!((params.min_tokens, params.max_tokens), (4, 8));
    }

    #[test]
    fn context_errors_keep_their_numbers() {
        let error = EngineError::ContextLengthExceeded { max: 64, requested: 80, prompt: 60, max_tokens: 20 };
        let api = engine_error(error, "messages");
        assert_eq!((api.status, api.code), (400, Some("context_length_exceeded")));
        assert!(api.message.contains("64") && api.message.contains("80"));
        assert_eq!(engine_error(EngineError::Overloaded(4), "prompt").status, 429);
    }
}
