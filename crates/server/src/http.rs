//! HTTP plumbing: errors as OpenAI envelopes, the JSON body extractor, and fallbacks.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sconce_protocol::ApiError;
use serde::de::DeserializeOwned;

use crate::state::AppState;

/// Seconds a client is told to wait after a 429 or a 503.
const RETRY_AFTER_SECS: &str = "1";

/// An [`ApiError`] sent as `{"error": {...}}` with its status.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), message = %self.0.message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), message = %self.0.message, "request refused");
        }
        let mut response = (status, Json(self.0.envelope())).into_response();
        if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        response
    }
}

/// A JSON body whose every failure is an OpenAI error: 415 for another content type,
/// 413 over the body limit, 400 for bad JSON or a schema mismatch.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(request.headers()) {
            return Err(ApiError::unsupported_media_type().into());
        }
        let limit = state.settings().max_request_body_bytes;
        let timeout = state.settings().http.body_read_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(request, state));
        let body = read.await.map_err(|_| body_timeout(timeout))?.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(limit)
            } else {
                ApiError::invalid_request(rejection.body_text())
            }
        })?;
        let value = serde_json::from_slice(&body).map_err(ApiError::invalid_json)?;
        Ok(Self(value))
    }
}

/// 408: the client did not send its body in time.
fn body_timeout(timeout: std::time::Duration) -> ApiError {
    let message = format!("the request body was not received within {} s", timeout.as_secs());
    ApiError { status: 408, kind: "invalid_request_error", message, param: None, code: Some("request_timeout") }
}

/// A missing content type is read as JSON; anything else must say JSON.
fn has_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

pub async fn route_not_found(method: Method, uri: Uri) -> HttpError {
    ApiError::route_not_found(method.as_str(), uri.path()).into()
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    ApiError::method_not_allowed(method.as_str(), uri.path()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(has_json_content_type(&headers("application/json")));
        assert!(has_json_content_type(&headers("Application/JSON; charset=utf-8")));
        assert!(has_json_content_type(&HeaderMap::new()));
        assert!(!has_json_content_type(&headers("text/plain")));
        assert!(!has_json_content_type(&headers("application/x-www-form-urlencoded")));
    }

    #[test]
    fn overload_carries_retry_after() {
        let response = HttpError(ApiError::overloaded("busy")).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
