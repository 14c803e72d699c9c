//! The OpenAI error envelope: `{"error":{"message","type","param","code"}}`.

use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// An error the API reports, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), param: None, code: None }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// 400: a malformed or unsupported request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, INVALID_REQUEST, message)
    }

    /// 400: a bad value for one parameter.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::invalid_request(message).with_param(param).with_code("invalid_value")
    }

    /// 400: the body is not valid JSON or does not match the schema.
    pub fn invalid_json(detail: impl std::fmt::Display) -> Self {
        Self::invalid_request(format!("invalid JSON body: {detail}")).with_code("invalid_json")
    }

    /// 400: prompt plus max_tokens do not fit the model's context.
    pub fn context_length_exceeded(message: impl Into<String>) -> Self {
        Self::invalid_request(message).with_code("context_length_exceeded")
    }

    /// 404: the requested model is not served here.
    pub fn model_not_found(model: &str) -> Self {
        Self::new(404, INVALID_REQUEST, format!("the model `{model}` does not exist"))
            .with_param("model")
            .with_code("model_not_found")
    }

    /// 404: no route matches the path.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(404, INVALID_REQUEST, format!("no route for {method} {path}")).with_code("not_found")
    }

    /// 405: the path exists but not for this method.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(405, INVALID_REQUEST, format!("method {method} is not allowed on {path}"))
            .with_code("method_not_allowed")
    }

    /// 409: the request collides with one in progress (e.g. a reused request id).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, INVALID_REQUEST, message).with_code("conflict")
    }

    /// 413: the body is over the configured limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(413, INVALID_REQUEST, format!("request body is larger than {limit} bytes"))
            .with_code("request_too_large")
    }

    /// 415: the body is not `application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::new(415, INVALID_REQUEST, "expected `Content-Type: application/json`").with_code("unsupported_media_type")
    }

    /// 429: the waiting queue is over its bound.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(429, "rate_limit_error", message).with_code("overloaded")
    }

    /// 503: the model is loading or the server is draining.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "service_unavailable", message).with_code("unavailable")
    }

    /// 500: a server-side failure.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message).with_code("internal_error")
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                message: self.message.clone(),
                kind: self.kind.to_string(),
                param: self.param.clone(),
                code: self.code.map(str::to_string),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_fields_even_when_null() {
        let json = serde_json::to_value(ApiError::invalid_request("bad").envelope()).unwrap();
        let error = json["error"].as_object().unwrap();
        for key in ["message", "type", "param", "code"] {
            assert!(error.contains_key(key), "missing {key}");
        }
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["param"].is_null());
    }

    #[test]
    fn model_not_found_is_404_with_code() {
        let err = ApiError::model_not_found("gpt-9");
        assert_eq!(err.status, 404);
        assert_eq!(err.code, Some("model_not_found"));
        assert!(err.message.contains("gpt-9"));
    }
}
