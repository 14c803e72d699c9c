//! Failure causes, which of them are retried, and jittered backoff.

use std::time::Duration;

use sconce_protocol::ApiError;
use serde::{Deserialize, Serialize};

/// Why an attempt failed, as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Connect error, timeout, 429 or 5xx: retry, then fall back.
    Retryable,
    ContextWindow,
    ContentPolicy,
    /// Any other client error: answer it as it is.
    Client,
}

impl Cause {
    pub fn of(error: &ApiError) -> Self {
        let code = error.code.unwrap_or("");
        match (error.status, code) {
            (_, "context_length_exceeded") => Cause::ContextWindow,
            (_, "content_policy_violation") => Cause::ContentPolicy,
            (408 | 429, _) => Cause::Retryable,
            (status, _) if status >= 500 => Cause::Retryable,
            _ => Cause::Client,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Retryable => "error",
            Cause::ContextWindow => "context_window",
            Cause::ContentPolicy => "content_policy",
            Cause::Client => "client",
        }
    }

    /// Whether it counts against the deployment's breaker.
    pub fn is_deployment_failure(self) -> bool {
        self == Cause::Retryable
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra tries on one deployment after a retryable failure.
    pub max_retries: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_retries: 1, base_delay_ms: 50, max_delay_ms: 2000 }
    }
}

impl RetryConfig {
    /// Full-jitter exponential backoff before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.base_delay_ms.saturating_mul(1 << attempt.min(16)).min(self.max_delay_ms);
        Duration::from_millis(jitter(cap))
    }
}

fn jitter(cap: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0x2545_F491_4F6C_DD1D);
    let mut x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    if cap == 0 {
        0
    } else {
        cap / 2 + x % (cap / 2 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes() {
        assert_eq!(Cause::of(&ApiError::overloaded("busy")), Cause::Retryable);
        assert_eq!(Cause::of(&ApiError::unavailable("down")), Cause::Retryable);
        assert_eq!(Cause::of(&ApiError::context_length_exceeded("long")), Cause::ContextWindow);
        assert_eq!(Cause::of(&ApiError::invalid_request("bad")), Cause::Client);
        let policy = ApiError::invalid_request("no").with_code("content_policy_violation");
        assert_eq!(Cause::of(&policy), Cause::ContentPolicy);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let config = RetryConfig { max_retries: 3, base_delay_ms: 100, max_delay_ms: 300 };
        for attempt in 1..6 {
            let d = config.delay(attempt).as_millis() as u64;
            assert!((50..=300).contains(&d), "{d}");
        }
    }
}
