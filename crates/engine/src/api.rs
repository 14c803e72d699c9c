//! Public request/response types of the engine. Token ids in, token ids and text out.

use std::time::{Duration, Instant};

use crate::constrain::Constraint;

/// Sampling and stopping parameters for one request (OpenAI + vLLM extras).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Number of independent completions (choices). Children share the prompt's KV blocks.
    pub n: usize,
    /// 0.0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    pub min_p: f32,
    /// 1.0 disables it.
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: Option<u64>,
    /// Return the sampled token's logprob and this many top alternatives.
    pub logprobs: Option<usize>,
    /// Return logprobs of every prompt token (after the first) with this many alternatives.
    pub prompt_logprobs: Option<usize>,
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub skip_special_tokens: bool,
    pub include_stop_str_in_output: bool,
    /// A compiled grammar the output must follow (see [`crate::Grammars::compile`]).
    pub constraint: Option<Constraint>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
            prompt_logprobs: None,
            max_tokens: 16,
            min_tokens: 0,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            skip_special_tokens: true,
            include_stop_str_in_output: false,
            constraint: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy(max_tokens: usize) -> Self {
        Self { temperature: 0.0, max_tokens, ..Self::default() }
    }
}

/// One generation request as the engine sees it.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Caller-chosen unique id (used by `abort`).
    pub id: String,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Lower value = more important (vLLM convention). Default 0.
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// EOS, a stop token id or a stop string.
    Stop,
    /// max_tokens or the context length.
    Length,
    /// Aborted by the caller.
    Abort,
    /// The engine failed (a failed step or a panic): the request ends with a server error.
    Error,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
            FinishReason::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
    /// Top alternatives, most likely first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// Per-request timings, reported with the final delta.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimings {
    pub arrival: Instant,
    pub queued: Duration,
    pub prefill: Duration,
    pub decode: Duration,
    pub time_to_first_token: Duration,
    pub e2e: Duration,
}

/// What one step produced for one choice of a request.
#[derive(Debug, Clone)]
pub struct Delta {
    /// Choice index (0..n).
    pub index: usize,
    pub token_ids: Vec<u32>,
    /// Newly stable text; never retracted, never broken UTF-8, never a partial stop string.
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    /// Set once, on the first delta of choice 0, when prompt logprobs were requested.
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
    pub finish_reason: Option<FinishReason>,
    /// Set with `finish_reason`: this choice's usage (prompt counted once per choice).
    pub usage: Option<Usage>,
    pub timings: Option<RequestTimings>,
}

/// A snapshot of engine counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    pub num_running: usize,
    pub num_waiting: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_free: usize,
    /// Fraction of blocks in use, 0..1.
    pub kv_usage: f64,
    /// Tokens whose KV the running sequences hold (with `kv_blocks_*`, this gives the slot waste).
    pub kv_tokens_held: usize,
    pub prefix_cache_queries: u64,
    pub prefix_cache_hits: u64,
    pub preemptions: u64,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub steps: u64,
}

/// Static facts about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub name: String,
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub block_size: usize,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("this model's maximum context length is {max} tokens, but {requested} tokens were requested ({prompt} in the prompt, {max_tokens} to generate)")]
    ContextLengthExceeded { max: usize, requested: usize, prompt: usize, max_tokens: usize },
    #[error("invalid parameter `{param}`: {message}")]
    InvalidParam { param: &'static str, message: String },
    #[error("token id {0} is outside the vocabulary")]
    InvalidToken(u32),
    #[error("a request with id `{0}` is already running")]
    DuplicateId(String),
    #[error("the waiting queue is full ({0} requests)")]
    Overloaded(usize),
    #[error("the engine has stopped")]
    Stopped,
    #[error("failed to load the model: {0}")]
    Load(String),
    #[error("engine failure: {0}")]
    Internal(String),
}
