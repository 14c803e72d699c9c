//! What an endpoint asks of the engine: sampling parameters and one engine request per
//! prompt, and how engine errors read on the wire.

use sconce_protocol::{ApiError, LogprobShape, RequestLimits, SamplingOptions};

use crate::backend::{Constraint, EngineError, GenerateRequest, ModelInfo, SamplingParams};
use crate::state::unix_now;

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
    /// The request field that asks for alternatives (`top_logprobs` or `logprobs`), for errors.
    pub logprobs_param: &'static str,
    pub limits: &'a RequestLimits,
    /// The compiled grammar every choice follows, if any.
    pub constraint: Option<Constraint>,
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
    pub fn sampling_params(&self, prompt_len: usize, info: &ModelInfo) -> Result<SamplingParams, ApiError> {
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
            logit_bias: options.parsed_logit_bias(self.limits, Some(info.vocab_size))?,
            seed: options.seed.map(|seed| seed as u64),
            logprobs: self.logprobs,
            prompt_logprobs: self.prompt_logprobs,
            max_tokens: self.max_tokens(prompt_len, info.max_model_len),
            min_tokens: options.min_tokens.unwrap_or(0),
            stop: options.stop.as_ref().map(|stop| stop.to_vec()).unwrap_or_default(),
            stop_token_ids: options.stop_token_ids.clone().unwrap_or_default(),
            ignore_eos: options.ignore_eos.unwrap_or(false),
            skip_special_tokens: options.skip_special_tokens.unwrap_or(true),
            include_stop_str_in_output: options.include_stop_str_in_output.unwrap_or(false),
            constraint: self.constraint.clone(),
        })
    }

    /// One engine request per prompt, with the request's id (`{id}-{i}` within a batch).
    /// Checks the logprobs bound before anything is submitted.
    pub fn requests(
        &self,
        id: &str,
        prompts: Vec<Vec<u32>>,
        info: &ModelInfo,
    ) -> Result<Vec<GenerateRequest>, ApiError> {
        let count = prompts.len();
        let priority = self.sampling.priority.unwrap_or(0);
        let request = |(index, prompt): (usize, Vec<u32>)| {
            let params = self.sampling_params(prompt.len(), info)?;
            let id = if count == 1 { id.to_string() } else { format!("{id}-{index}") };
            Ok(GenerateRequest { id, prompt, params, priority })
        };
        let requests = prompts.into_iter().enumerate().map(request).collect::<Result<Vec<_>, ApiError>>()?;
        self.check_logprob_entries(&requests, info.max_model_len)?;
        Ok(requests)
    }

    /// Bounds what the logprobs can build: (echoed prompt + generated tokens, at most the
    /// context) × (alternatives + 1) × choices, over all prompts.
    fn check_logprob_entries(&self, requests: &[GenerateRequest], max_model_len: usize) -> Result<(), ApiError> {
        let Some(top) = self.logprobs.or(self.prompt_logprobs) else { return Ok(()) };
        let shape = |request: &GenerateRequest| {
            let prompt = request.prompt.len();
            let room = max_model_len.saturating_sub(prompt);
            LogprobShape {
                prompt_tokens: if self.prompt_logprobs.is_some() { prompt } else { 0 },
                max_tokens: if self.logprobs.is_some() { request.params.max_tokens.min(room) } else { 0 },
                top,
                choices: request.params.n,
            }
        };
        let shapes: Vec<LogprobShape> = requests.iter().map(shape).collect();
        self.limits.check_logprob_entries(self.logprobs_param, &shapes)
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
    pub fn new(id: String, model: &str) -> Self {
        Self { id, created: unix_now(), model: model.to_string() }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sconce_protocol::SamplingOptions;

    const LIMITS: &RequestLimits = &RequestLimits {
        max_n: 128,
        max_choices: 256,
        max_prompts: 128,
        max_stop: 16,
        max_stop_bytes: 256,
        max_stop_token_ids: 64,
        max_logit_bias: 300,
        max_top_logprobs: 20,
        max_logprob_entries: 10_000,
        max_user_bytes: 256,
        max_model_bytes: 256,
        max_embedding_inputs: 2048,
        max_embedding_tokens: 262_144,
    };

    fn info(max_model_len: usize) -> ModelInfo {
        ModelInfo { name: "m".into(), max_model_len, vocab_size: 100, block_size: 16 }
    }

    fn spec(sampling: &SamplingOptions, max_tokens: Option<usize>, default: Option<usize>) -> GenerationSpec<'_> {
        GenerationSpec {
            sampling,
            max_tokens,
            default_max_tokens: default,
            logprobs: None,
            prompt_logprobs: None,
            prompt_param: "prompt",
            logprobs_param: "logprobs",
            limits: LIMITS,
            constraint: None,
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
        let params = spec(&sampling, Some(8), None).sampling_params(3, &info(100)).unwrap();
        assert_eq!((params.n, params.temperature, params.top_k, params.seed), (2, 0.5, 0, Some(7)));
        assert_eq!(params.stop, vec!["END"]);
        assert_eq!(params.logit_bias, vec![(3, 1.5)]);
        assert!(params.ignore_eos);
        assert_eq!((params.min_tokens, params.max_tokens), (4, 8));
    }

    #[test]
    fn logit_bias_ids_must_be_in_the_vocabulary() {
        let sampling: SamplingOptions = serde_json::from_value(serde_json::json!({"logit_bias": {"100": 1}})).unwrap();
        let error = spec(&sampling, Some(8), None).sampling_params(3, &info(100)).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("logit_bias"));
    }

    #[test]
    fn echoed_prompt_logprobs_count_once_per_choice() {
        let sampling: SamplingOptions = serde_json::from_value(serde_json::json!({"n": 4})).unwrap();
        let echo = GenerationSpec { logprobs: Some(4), prompt_logprobs: Some(4), ..spec(&sampling, Some(10), None) };
        // (490 prompt + 10 generated) × 5 × 4 = 10_000: at the limit.
        assert!(echo.requests("r", vec![vec![1; 490]], &info(1000)).is_ok());
        let error = echo.requests("r", vec![vec![1; 491]], &info(1000)).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("logprobs"));
        // Two prompts add up.
        assert!(echo.requests("r", vec![vec![1; 200], vec![1; 300]], &info(1000)).is_err());
        // Without logprobs nothing is counted; a huge max_tokens counts only the room left.
        assert!(spec(&sampling, Some(10), None).requests("r", vec![vec![1; 900]], &info(1000)).is_ok());
        let huge = GenerationSpec { logprobs: Some(0), ..spec(&sampling, Some(usize::MAX), None) };
        assert!(huge.requests("r", vec![vec![1; 10]], &info(1000)).is_ok());
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
