//! The gateway's own errors, and the one place they become OpenAI errors on the wire.

use std::time::Duration;

use sconce_protocol::ApiError;

/// Why the gateway refused, failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A `[gateway]` setting that cannot work (found at startup).
    #[error("gateway config: {0}")]
    Config(String),
    /// 401: a missing, unknown, revoked or expired key.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the key may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 429: over a key's RPM or TPM limit.
    #[error("{0}")]
    RateLimited(String),
    /// 429: a key's or team's budget is spent.
    #[error("{0}")]
    BudgetExceeded(String),
    /// 404: a registry prompt, version or label that does not exist.
    #[error("{message}")]
    NotFound { param: &'static str, code: &'static str, message: String },
    /// 504: a deployment did not answer in time.
    #[error("deployment `{deployment}` timed out after {after:?}")]
    UpstreamTimeout { deployment: String, after: Duration },
    /// 502/504: the upstream could not be reached.
    #[error("upstream unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// The upstream answered with an error (its status and, when known, its code).
    #[error("{message}")]
    Upstream { status: u16, message: String, code: Option<&'static str> },
    /// 502: the upstream's reply could not be read.
    #[error("bad upstream reply: {0}")]
    BadUpstreamReply(String),
    /// 500: the store or another part of the gateway failed.
    #[error("{0:#}")]
    Internal(#[source] anyhow::Error),
}

impl GatewayError {
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(message.into())
    }
}

/// Upstream error codes kept as they are (routing reads them to pick a fallback).
const KNOWN_UPSTREAM_CODES: &[&str] =
    &["context_length_exceeded", "content_policy_violation", "model_not_found", "overloaded", "rate_limit_exceeded"];

/// An upstream's code, when it is one routing knows.
pub fn known_upstream_code(code: &str) -> Option<&'static str> {
    KNOWN_UPSTREAM_CODES.iter().find(|known| **known == code).copied()
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        let message = error.to_string();
        let (status, kind, code, param): (u16, &'static str, Option<&'static str>, Option<&'static str>) = match &error
        {
            GatewayError::Config(_) => (500, "server_error", Some("internal_error"), None),
            GatewayError::Unauthorized(_) => (401, "invalid_request_error", Some("invalid_api_key"), None),
            GatewayError::Forbidden(_) => (403, "permission_error", Some("insufficient_permissions"), None),
            GatewayError::RateLimited(_) => (429, "rate_limit_error", Some("rate_limit_exceeded"), None),
            GatewayError::BudgetExceeded(_) => (429, "rate_limit_error", Some("budget_exceeded"), None),
            GatewayError::NotFound { param, code, .. } => (404, "invalid_request_error", Some(*code), Some(*param)),
            GatewayError::UpstreamTimeout { .. } => (504, "upstream_error", Some("upstream_timeout"), None),
            GatewayError::Transport(source) => {
                (if source.is_timeout() { 504 } else { 502 }, "upstream_error", Some("upstream_unavailable"), None)
            }
            GatewayError::Upstream { status, code, .. } => (*status, upstream_kind(*status), *code, None),
            GatewayError::BadUpstreamReply(_) => (502, "upstream_error", None, None),
            GatewayError::Internal(_) => (500, "server_error", Some("internal_error"), None),
        };
        ApiError { status, kind, message, param: param.map(str::to_string), code }
    }
}

fn upstream_kind(status: u16) -> &'static str {
    match status {
        429 => "rate_limit_error",
        500.. => "upstream_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_keeps_its_status_and_code() {
        let cases: Vec<(GatewayError, u16, Option<&str>)> = vec![
            (GatewayError::Unauthorized("no key".into()), 401, Some("invalid_api_key")),
            (GatewayError::Forbidden("no".into()), 403, Some("insufficient_permissions")),
            (GatewayError::RateLimited("slow down".into()), 429, Some("rate_limit_exceeded")),
            (GatewayError::BudgetExceeded("spent".into()), 429, Some("budget_exceeded")),
            (GatewayError::UpstreamTimeout { deployment: "a".into(), after: Duration::from_secs(1) }, 504, None),
            (GatewayError::Upstream { status: 503, message: "down".into(), code: None }, 503, None),
        ];
        for (error, status, code) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status, status);
            if code.is_some() {
                assert_eq!(api.code, code);
            }
        }
        assert_eq!(known_upstream_code("overloaded"), Some("overloaded"));
        assert_eq!(known_upstream_code("made_up"), None);
    }
}
