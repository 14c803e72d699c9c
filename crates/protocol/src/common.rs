//! Fields shared by chat and text completions, and their validation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// `stop` may be one string or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopSpec::One(stop) => vec![stop.clone()],
            StopSpec::Many(stops) => stops.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
    /// vLLM's extra: with `include_usage`, every chunk carries the usage so far.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continuous_usage_stats: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    /// The request's cost in the gateway's currency, when the gateway meters it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
            cost: None,
        }
    }
}

/// Sampling and stopping fields common to `/v1/chat/completions` and `/v1/completions`
/// (OpenAI's plus vLLM's extras). Flattened into both request types.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingOptions {
    pub n: Option<usize>,
    pub best_of: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM extra; 0 or -1 disables it.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) to a bias in [-100, 100].
    pub logit_bias: Option<HashMap<String, f32>>,
    pub seed: Option<i64>,
    pub max_tokens: Option<usize>,
    pub min_tokens: Option<usize>,
    pub stop: Option<StopSpec>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub include_stop_str_in_output: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    /// vLLM extra: lower runs first.
    pub priority: Option<i32>,
    /// Only `{"type":"text"}` is accepted until constrained decoding exists.
    pub response_format: Option<serde_json::Value>,
}

/// Most top alternatives a request may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Most choices a request may ask for.
pub const MAX_CHOICES: usize = 128;

impl SamplingOptions {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|options| options.include_usage)
    }

    /// Usage on every chunk (vLLM's `continuous_usage_stats`, with `include_usage`).
    pub fn continuous_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|options| options.include_usage && options.continuous_usage_stats)
    }

    pub fn choices(&self) -> usize {
        self.n.unwrap_or(1)
    }

    /// Parses `logit_bias` keys into token ids.
    pub fn parsed_logit_bias(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        let Some(bias) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        let mut parsed = Vec::with_capacity(bias.len());
        for (key, &value) in bias {
            let token = key
                .parse::<u32>()
                .map_err(|_| ApiError::invalid_param("logit_bias", format!("`{key}` is not a token id")))?;
            if !(-100.0..=100.0).contains(&value) {
                return Err(ApiError::invalid_param(
                    "logit_bias",
                    format!("bias {value} for token {token} is outside [-100, 100]"),
                ));
            }
            parsed.push((token, value));
        }
        parsed.sort_by_key(|&(token, _)| token);
        Ok(parsed)
    }

    /// Checks ranges and refuses what Sconce cannot do yet.
    pub fn validate(&self) -> Result<(), ApiError> {
        self.validate_counts()?;
        check_range("temperature", self.temperature, 0.0, f32::MAX)?;
        check_range("top_p", self.top_p, f32::MIN_POSITIVE, 1.0)?;
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("repetition_penalty", self.repetition_penalty, f32::MIN_POSITIVE, f32::MAX)?;
        if self.top_k.is_some_and(|top_k| top_k < -1) {
            return Err(ApiError::invalid_param("top_k", "top_k must be -1, 0 or positive"));
        }
        self.parsed_logit_bias()?;
        validate_response_format(self.response_format.as_ref())
    }

    fn validate_counts(&self) -> Result<(), ApiError> {
        let n = self.choices();
        if n == 0 || n > MAX_CHOICES {
            return Err(ApiError::invalid_param("n", format!("n must be in 1..={MAX_CHOICES}")));
        }
        if self.best_of.is_some_and(|best_of| best_of != n) {
            return Err(ApiError::invalid_param("best_of", "best_of is supported only when it equals n"));
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::invalid_param("max_tokens", "max_tokens must be at least 1"));
        }
        if self.stream_options.is_some() && !self.is_stream() {
            return Err(ApiError::invalid_param(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        Ok(())
    }
}

fn check_range(param: &str, value: Option<f32>, min: f32, max: f32) -> Result<(), ApiError> {
    match value {
        Some(value) if !(value.is_finite() && (min..=max).contains(&value)) => {
            Err(ApiError::invalid_param(param, format!("{param} = {value} is outside the allowed range")))
        }
        _ => Ok(()),
    }
}

fn validate_response_format(format: Option<&serde_json::Value>) -> Result<(), ApiError> {
    let Some(format) = format else { return Ok(()) };
    match format.get("type").and_then(serde_json::Value::as_str) {
        Some("text") => Ok(()),
        Some(kind) => Err(ApiError::invalid_param(
            "response_format",
            format!("response_format `{kind}` is not supported yet: Sconce has no constrained decoding"),
        )),
        None => Err(ApiError::invalid_param("response_format", "response_format needs a `type`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(value: serde_json::Value) -> SamplingOptions {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn stop_accepts_a_string_or_a_list() {
        assert_eq!(options(json!({"stop": "x"})).stop.unwrap().to_vec(), vec!["x"]);
        assert_eq!(options(json!({"stop": ["a", "b"]})).stop.unwrap().to_vec(), vec!["a", "b"]);
    }

    #[test]
    fn best_of_must_equal_n() {
        assert!(options(json!({"n": 2, "best_of": 2})).validate().is_ok());
        let err = options(json!({"n": 1, "best_of": 3})).validate().unwrap_err();
        assert_eq!(err.param.as_deref(), Some("best_of"));
    }

    #[test]
    fn json_schema_response_format_is_refused() {
        assert!(options(json!({"response_format": {"type": "text"}})).validate().is_ok());
        let err = options(json!({"response_format": {"type": "json_object"}})).validate().unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("constrained decoding"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            json!({"top_p": 0.0}),
            json!({"temperature": -1}),
            json!({"n": 0}),
            json!({"logit_bias": {"abc": 1}}),
            json!({"logit_bias": {"5": 101}}),
        ] {
            assert!(options(bad.clone()).validate().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn logit_bias_keys_become_token_ids() {
        let parsed = options(json!({"logit_bias": {"7": -100, "3": 5}})).parsed_logit_bias().unwrap();
        assert_eq!(parsed, vec![(3, 5.0), (7, -100.0)]);
    }
}
