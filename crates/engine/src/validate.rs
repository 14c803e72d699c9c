//! Request checks that run before anything is queued.

use crate::api::{EngineError, GenerateRequest, ModelInfo};

fn invalid(param: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidParam { param, message: message.into() }
}

/// Typed errors for bad input; never a panic later.
pub fn validate_request(req: &GenerateRequest, info: &ModelInfo) -> Result<(), EngineError> {
    let p = &req.params;
    if req.prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= info.vocab_size) {
        return Err(EngineError::InvalidToken(bad));
    }
    if p.n == 0 {
        return Err(invalid("n", "must be at least 1"));
    }
    if p.max_tokens == 0 {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    if p.min_tokens > p.max_tokens {
        return Err(invalid("min_tokens", "must not exceed max_tokens"));
    }
    if p.logit_bias.iter().any(|&(t, _)| t as usize >= info.vocab_size) {
        return Err(invalid("logit_bias", "token id outside the vocabulary"));
    }
    check_sampling(req)?;
    // Saturates: `max_tokens` may be as large as `usize::MAX`.
    let requested = req.prompt.len().saturating_add(p.max_tokens);
    if requested > info.max_model_len {
        return Err(EngineError::ContextLengthExceeded {
            max: info.max_model_len,
            requested,
            prompt: req.prompt.len(),
            max_tokens: p.max_tokens,
        });
    }
    Ok(())
}

fn check_sampling(req: &GenerateRequest) -> Result<(), EngineError> {
    let p = &req.params;
    if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
        return Err(invalid("temperature", "must be a finite number >= 0"));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(invalid("top_p", "must be in (0, 1]"));
    }
    if !(0.0..=1.0).contains(&p.min_p) {
        return Err(invalid("min_p", "must be in [0, 1]"));
    }
    if !(p.repetition_penalty > 0.0 && p.repetition_penalty.is_finite()) {
        return Err(invalid("repetition_penalty", "must be > 0"));
    }
    if !(-2.0..=2.0).contains(&p.presence_penalty) {
        return Err(invalid("presence_penalty", "must be in [-2, 2]"));
    }
    if !(-2.0..=2.0).contains(&p.frequency_penalty) {
        return Err(invalid("frequency_penalty", "must be in [-2, 2]"));
    }
    if p.logprobs.is_some_and(|k| k > 20) || p.prompt_logprobs.is_some_and(|k| k > 20) {
        return Err(invalid("logprobs", "at most 20 alternatives"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SamplingParams;

    #[test]
    fn a_huge_max_tokens_exceeds_the_context_without_overflowing() {
        let info = ModelInfo { name: "m".into(), max_model_len: 64, vocab_size: 10, block_size: 16 };
        let params = SamplingParams { max_tokens: usize::MAX, ..SamplingParams::default() };
        let req = GenerateRequest { id: "r".into(), prompt: vec![1, 2, 3], params, priority: 0 };
        match validate_request(&req, &info) {
            Err(EngineError::ContextLengthExceeded { requested, .. }) => assert_eq!(requested, usize::MAX),
            other => panic!("expected a context error, got {other:?}"),
        }
    }
}
