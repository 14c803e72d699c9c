//! How much one request may ask for: the `[limits]` section of the server config.
//!
//! Every bound is checked before any work is done for the request, with a 400
//! `invalid_request_error` naming the parameter. Length arithmetic saturates.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The largest `max_tokens` (and `min_tokens`) anyone may ask for, whatever the limits:
/// no context is this long, and it keeps `n × max_tokens` far from overflowing.
pub const MAX_TOKENS_CEILING: usize = u32::MAX as usize;

/// Per-request bounds. Each flag also reads its `SCONCE_*` variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// Most choices (`n`, and `best_of`) per prompt.
    #[cfg_attr(feature = "clap", arg(long = "limit-n", env = "SCONCE_LIMIT_N", value_name = "N"))]
    pub max_n: usize,
    /// Most choices in one request: prompts × `n`.
    #[cfg_attr(feature = "clap", arg(long = "limit-choices", env = "SCONCE_LIMIT_CHOICES", value_name = "N"))]
    pub max_choices: usize,
    /// Most prompts in one `/v1/completions` batch (strings or token-id lists).
    #[cfg_attr(feature = "clap", arg(long = "limit-prompts", env = "SCONCE_LIMIT_PROMPTS", value_name = "N"))]
    pub max_prompts: usize,
    /// Most `stop` strings.
    #[cfg_attr(feature = "clap", arg(long = "limit-stop", env = "SCONCE_LIMIT_STOP", value_name = "N"))]
    pub max_stop: usize,
    /// Longest `stop` string, in bytes.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-stop-bytes", env = "SCONCE_LIMIT_STOP_BYTES", value_name = "BYTES")
    )]
    pub max_stop_bytes: usize,
    /// Most `stop_token_ids`.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-stop-token-ids", env = "SCONCE_LIMIT_STOP_TOKEN_IDS", value_name = "N")
    )]
    pub max_stop_token_ids: usize,
    /// Most `logit_bias` entries.
    #[cfg_attr(feature = "clap", arg(long = "limit-logit-bias", env = "SCONCE_LIMIT_LOGIT_BIAS", value_name = "N"))]
    pub max_logit_bias: usize,
    /// Most top alternatives per token (`top_logprobs`, completions' `logprobs`); the engine's
    /// own ceiling is 20.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-top-logprobs", env = "SCONCE_LIMIT_TOP_LOGPROBS", value_name = "N")
    )]
    pub max_top_logprobs: usize,
    /// Most logprob entries one request can build: (prompt tokens when echoed + max_tokens)
    /// × (alternatives + 1) × choices.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-logprob-entries", env = "SCONCE_LIMIT_LOGPROB_ENTRIES", value_name = "N")
    )]
    pub max_logprob_entries: usize,
    /// Longest `user`, in bytes.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-user-bytes", env = "SCONCE_LIMIT_USER_BYTES", value_name = "BYTES")
    )]
    pub max_user_bytes: usize,
    /// Longest `model`, in bytes.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-model-bytes", env = "SCONCE_LIMIT_MODEL_BYTES", value_name = "BYTES")
    )]
    pub max_model_bytes: usize,
    /// Most inputs in one `/v1/embeddings` request.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-embedding-inputs", env = "SCONCE_LIMIT_EMBEDDING_INPUTS", value_name = "N")
    )]
    pub max_embedding_inputs: usize,
    /// Most tokens in one `/v1/embeddings` request, all inputs together.
    #[cfg_attr(
        feature = "clap",
        arg(long = "limit-embedding-tokens", env = "SCONCE_LIMIT_EMBEDDING_TOKENS", value_name = "N")
    )]
    pub max_embedding_tokens: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_n: 128,
            max_choices: 256,
            max_prompts: 128,
            max_stop: 16,
            max_stop_bytes: 256,
            max_stop_token_ids: 64,
            max_logit_bias: 300,
            max_top_logprobs: 20,
            max_logprob_entries: 2_000_000,
            max_user_bytes: 256,
            max_model_bytes: 256,
            max_embedding_inputs: 2048,
            max_embedding_tokens: 262_144,
        }
    }
}

/// What one prompt of a request may add to its logprobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogprobShape {
    /// Prompt tokens whose logprobs are returned (echo), else 0.
    pub prompt_tokens: usize,
    /// The most tokens generated per choice.
    pub max_tokens: usize,
    /// Top alternatives per token.
    pub top: usize,
    /// Choices of this prompt.
    pub choices: usize,
}

impl LogprobShape {
    /// Entries this prompt can build: every token carries itself and its alternatives.
    pub fn entries(&self) -> usize {
        let per_choice = self.prompt_tokens.saturating_add(self.max_tokens);
        per_choice.saturating_mul(self.top.saturating_add(1)).saturating_mul(self.choices)
    }
}

impl RequestLimits {
    /// `value` must be at most `max`.
    pub fn check_at_most(param: &str, what: &str, value: usize, max: usize) -> Result<(), ApiError> {
        if value > max {
            return Err(ApiError::invalid_param(param, format!("{what} is {value}, more than the limit of {max}")));
        }
        Ok(())
    }

    /// The `model` name's length.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        let len = model.map_or(0, str::len);
        Self::check_at_most("model", "the length of `model` in bytes", len, self.max_model_bytes)
    }

    /// The logprob entries of all prompts together.
    pub fn check_logprob_entries(&self, param: &str, shapes: &[LogprobShape]) -> Result<(), ApiError> {
        let total = shapes.iter().fold(0usize, |sum, shape| sum.saturating_add(shape.entries()));
        if total > self.max_logprob_entries {
            let message = format!(
                "this request could build {total} logprob entries ((echoed prompt tokens + max_tokens) × \
                 (alternatives + 1) × choices), more than the limit of {}; lower max_tokens, n or {param}",
                self.max_logprob_entries
            );
            return Err(ApiError::invalid_param(param, message));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_saturate_instead_of_overflowing() {
        let shape = LogprobShape { prompt_tokens: usize::MAX, max_tokens: usize::MAX, top: 20, choices: 128 };
        assert_eq!(shape.entries(), usize::MAX);
        let err = RequestLimits::default().check_logprob_entries("logprobs", &[shape, shape]).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logprobs"));
    }

    #[test]
    fn echo_logprobs_and_n_multiply() {
        // A 40 KB prompt of ~10k tokens, echoed with 20 alternatives and 128 choices.
        let echo = LogprobShape { prompt_tokens: 10_000, max_tokens: 16, top: 20, choices: 128 };
        assert_eq!(echo.entries(), 10_016 * 21 * 128);
        assert!(RequestLimits::default().check_logprob_entries("logprobs", &[echo]).is_err());
        let small = LogprobShape { prompt_tokens: 0, max_tokens: 16, top: 20, choices: 128 };
        assert!(RequestLimits::default().check_logprob_entries("logprobs", &[small]).is_ok());
    }

    #[test]
    fn the_model_name_is_bounded() {
        let limits = RequestLimits::default();
        assert!(limits.check_model(Some(&"m".repeat(256))).is_ok());
        assert_eq!(limits.check_model(Some(&"m".repeat(257))).unwrap_err().param.as_deref(), Some("model"));
    }
}
