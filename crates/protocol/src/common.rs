//! Fields shared by chat and text completions, and their validation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::limits::{RequestLimits, MAX_TOKENS_CEILING};
use crate::logit_bias::parse_logit_bias;
use crate::structured::{output_constraint, GuidedFields, OutputConstraint, StructuredOutputs};

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
    /// `text`, `json_object` or `json_schema` (OpenAI).
    pub response_format: Option<serde_json::Value>,
    /// vLLM's `json`, `regex`, `choice` or `grammar` (Lark) constraint.
    pub structured_outputs: Option<StructuredOutputs>,
    /// vLLM's older `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`.
    #[serde(flatten)]
    pub guided: GuidedFields,
}

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

    /// `logit_bias` as `(token id, bias)` pairs sorted by id (see [`parse_logit_bias`]).
    pub fn parsed_logit_bias(
        &self,
        limits: &RequestLimits,
        vocab_size: Option<usize>,
    ) -> Result<Vec<(u32, f32)>, ApiError> {
        match &self.logit_bias {
            Some(bias) => parse_logit_bias(bias, limits.max_logit_bias, vocab_size),
            None => Ok(Vec::new()),
        }
    }

    /// Checks ranges and `limits`, and refuses what Sconce cannot do yet.
    pub fn validate(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        self.validate_counts(limits)?;
        self.validate_stops(limits)?;
        // As OpenAI: temperature in [0, 2].
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, f32::MIN_POSITIVE, 1.0)?;
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("repetition_penalty", self.repetition_penalty, f32::MIN_POSITIVE, f32::MAX)?;
        if self.top_k.is_some_and(|top_k| top_k < -1) {
            return Err(ApiError::invalid_param("top_k", "top_k must be -1, 0 or positive"));
        }
        let user_len = self.user.as_deref().map_or(0, str::len);
        RequestLimits::check_at_most("user", "the length of `user` in bytes", user_len, limits.max_user_bytes)?;
        self.parsed_logit_bias(limits, None)?;
        self.output_constraint().map(|_| ())
    }

    /// The output constraint the request sets, from whichever field sets it.
    pub fn output_constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        output_constraint(self.response_format.as_ref(), self.structured_outputs.as_ref(), &self.guided)
    }

    fn validate_counts(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        let n = self.choices();
        if n == 0 || n > limits.max_n {
            return Err(ApiError::invalid_param("n", format!("n must be in 1..={}", limits.max_n)));
        }
        if self.best_of.is_some_and(|best_of| best_of != n) {
            return Err(ApiError::invalid_param("best_of", "best_of is supported only when it equals n"));
        }
        check_max_tokens("max_tokens", self.max_tokens)?;
        check_max_tokens("min_tokens", self.min_tokens.filter(|&min| min > 0))?;
        if self.stream_options.is_some() && !self.is_stream() {
            return Err(ApiError::invalid_param(
                "stream_options",
                "stream_options is only allowed when stream is true",
            ));
        }
        Ok(())
    }

    fn validate_stops(&self, limits: &RequestLimits) -> Result<(), ApiError> {
        let stops = match &self.stop {
            None => &[][..],
            Some(StopSpec::One(stop)) => std::slice::from_ref(stop),
            Some(StopSpec::Many(stops)) => stops.as_slice(),
        };
        RequestLimits::check_at_most("stop", "the number of stop strings", stops.len(), limits.max_stop)?;
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        RequestLimits::check_at_most("stop", "the longest stop string in bytes", longest, limits.max_stop_bytes)?;
        let ids = self.stop_token_ids.as_ref().map_or(0, Vec::len);
        RequestLimits::check_at_most("stop_token_ids", "the number of stop_token_ids", ids, limits.max_stop_token_ids)
    }
}

/// `max_tokens`-like counts are at least 1 and at most [`MAX_TOKENS_CEILING`].
pub(crate) fn check_max_tokens(param: &str, value: Option<usize>) -> Result<(), ApiError> {
    match value {
        Some(0) => Err(ApiError::invalid_param(param, format!("{param} must be at least 1"))),
        Some(value) if value > MAX_TOKENS_CEILING => {
            Err(ApiError::invalid_param(param, format!("{param} must be at most {MAX_TOKENS_CEILING}")))
        }
        _ => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn options(value: serde_json::Value) -> SamplingOptions {
        serde_json::from_value(value).unwrap()
    }

    fn refused_param(value: serde_json::Value) -> String {
        let err = options(value.clone()).validate(&RequestLimits::default()).expect_err(&value.to_string());
        assert_eq!((err.status, err.kind), (400, "invalid_request_error"));
        err.param.unwrap_or_default()
    }

    #[test]
    fn stop_accepts_a_string_or_a_list() {
        assert_eq!(options(json!({"stop": "x"})).stop.unwrap().to_vec(), vec!["x"]);
        assert_eq!(options(json!({"stop": ["a", "b"]})).stop.unwrap().to_vec(), vec!["a", "b"]);
    }

    #[test]
    fn best_of_must_equal_n() {
        assert!(options(json!({"n": 2, "best_of": 2})).validate(&RequestLimits::default()).is_ok());
        assert_eq!(refused_param(json!({"n": 1, "best_of": 3})), "best_of");
    }

    #[test]
    fn response_formats_are_read_and_bad_ones_refused() {
        let limits = RequestLimits::default();
        assert!(options(json!({"response_format": {"type": "text"}})).validate(&limits).is_ok());
        let json_object = options(json!({"response_format": {"type": "json_object"}}));
        assert_eq!(json_object.output_constraint().unwrap(), Some(OutputConstraint::JsonObject));
        let guided = options(json!({"guided_choice": ["yes", "no"]}));
        assert_eq!(
            guided.output_constraint().unwrap(),
            Some(OutputConstraint::Choice(vec!["yes".into(), "no".into()]))
        );
        assert_eq!(refused_param(json!({"response_format": {"type": "yaml"}})), "response_format");
    }

    #[test]
    fn out_of_range_values_name_their_parameter() {
        for (bad, param) in [
            (json!({"top_p": 0.0}), "top_p"),
            (json!({"top_p": 1.5}), "top_p"),
            (json!({"temperature": -1}), "temperature"),
            (json!({"temperature": 2.01}), "temperature"),
            (json!({"temperature": 1e9}), "temperature"),
            (json!({"presence_penalty": 2.5}), "presence_penalty"),
            (json!({"frequency_penalty": -3}), "frequency_penalty"),
            (json!({"n": 0}), "n"),
            (json!({"n": 129}), "n"),
            (json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (json!({"logit_bias": {"5": 101}}), "logit_bias"),
            (json!({"logit_bias": {"5": 1, "+5": 2}}), "logit_bias"),
            (json!({"max_tokens": 0}), "max_tokens"),
            (json!({"max_tokens": u64::MAX}), "max_tokens"),
            (json!({"min_tokens": u64::MAX}), "min_tokens"),
            (json!({"user": "u".repeat(257)}), "user"),
        ] {
            assert_eq!(refused_param(bad.clone()), param, "{bad}");
        }
        assert!(options(json!({"temperature": 2.0, "max_tokens": MAX_TOKENS_CEILING}))
            .validate(&RequestLimits::default())
            .is_ok());
    }

    #[test]
    fn stop_strings_and_ids_are_bounded() {
        let limits = RequestLimits::default();
        let sixteen: Vec<String> = (0..16).map(|i| i.to_string()).collect();
        assert!(options(json!({"stop": sixteen, "stop_token_ids": vec![1; 64]})).validate(&limits).is_ok());
        let seventeen: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        assert_eq!(refused_param(json!({"stop": seventeen})), "stop");
        assert_eq!(refused_param(json!({"stop": "s".repeat(257)})), "stop");
        assert_eq!(refused_param(json!({"stop": ["ok", "s".repeat(257)]})), "stop");
        assert_eq!(refused_param(json!({"stop_token_ids": vec![1; 65]})), "stop_token_ids");
    }

    #[test]
    fn limits_come_from_the_config() {
        let tight = RequestLimits { max_n: 2, max_stop: 1, max_logit_bias: 1, ..RequestLimits::default() };
        assert_eq!(options(json!({"n": 3})).validate(&tight).unwrap_err().param.as_deref(), Some("n"));
        assert!(options(json!({"stop": ["a", "b"]})).validate(&tight).is_err());
        assert!(options(json!({"logit_bias": {"1": 1, "2": 1}})).validate(&tight).is_err());
        assert!(options(json!({"n": 2, "stop": "a", "logit_bias": {"1": 1}})).validate(&tight).is_ok());
    }

    #[test]
    fn logit_bias_keys_become_token_ids() {
        let sampling = options(json!({"logit_bias": {"7": -100, "03": 5}}));
        let parsed = sampling.parsed_logit_bias(&RequestLimits::default(), Some(8)).unwrap();
        assert_eq!(parsed, vec![(3, 5.0), (7, -100.0)]);
        assert!(sampling.parsed_logit_bias(&RequestLimits::default(), Some(7)).is_err());
    }
}
