//! A remote OpenAI-compatible upstream (another Sconce, vLLM, ...) as a `ChatBackend`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use sconce_protocol::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::common::StreamOptions;
use sconce_protocol::error::ErrorEnvelope;
use sconce_protocol::ApiError;

use crate::{ChatBackend, ChatCall, ChatOutcome, ChatReply, ChatResult, ChunkStream};

/// `base_url` ends in `/v1`; `model` is the upstream's name for it.
pub struct RemoteBackend {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    model: Option<String>,
}

impl RemoteBackend {
    pub fn new(base_url: &str, api_key: Option<String>, model: Option<String>, connect: Duration) -> Self {
        let client = reqwest::Client::builder().connect_timeout(connect).build().unwrap_or_default();
        Self { client, base_url: base_url.trim_end_matches('/').to_string(), api_key, model }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn prepare(&self, mut request: ChatCompletionRequest) -> ChatCompletionRequest {
        if let Some(model) = &self.model {
            request.model = Some(model.clone());
        }
        if request.sampling.is_stream() {
            request.sampling.stream_options = Some(StreamOptions { include_usage: true });
        }
        request
    }
}

impl ChatBackend for RemoteBackend {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        let request = self.prepare(call.request);
        let mut builder = self.client.post(format!("{}/chat/completions", self.base_url)).json(&request);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        Box::pin(async move {
            let response = builder.send().await.map_err(transport_error)?;
            if !response.status().is_success() {
                return Err(upstream_error(response).await.into());
            }
            let reply = if request.sampling.is_stream() {
                ChatReply::Stream(sse_chunks(response))
            } else {
                let body: ChatCompletionResponse = response.json().await.map_err(transport_error)?;
                ChatReply::Full(Box::new(body))
            };
            Ok(ChatOutcome::new(reply))
        })
    }
}

/// Connect errors and timeouts: 502/504, both retryable.
pub fn transport_error(error: reqwest::Error) -> ApiError {
    let status = if error.is_timeout() { 504 } else { 502 };
    ApiError {
        status,
        kind: "upstream_error",
        message: format!("upstream unreachable: {error}"),
        param: None,
        code: Some("upstream_unavailable"),
    }
}

const KNOWN_CODES: &[&str] =
    &["context_length_exceeded", "content_policy_violation", "model_not_found", "overloaded", "rate_limit_exceeded"];

async fn upstream_error(response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let envelope: Option<ErrorEnvelope> = response.json().await.ok();
    let (message, code) =
        envelope.map_or((format!("upstream answered {status}"), None), |e| (e.error.message, e.error.code));
    let code = code.and_then(|c| KNOWN_CODES.iter().find(|k| **k == c).copied());
    let kind = if status == 429 {
        "rate_limit_error"
    } else if status >= 500 {
        "upstream_error"
    } else {
        "invalid_request_error"
    };
    ApiError { status, kind, message, param: None, code }
}

fn sse_chunks(response: reqwest::Response) -> ChunkStream {
    let mut buffer = String::new();
    let lines = response.bytes_stream().map_err(transport_error).map_ok(move |bytes| {
        buffer.push_str(&String::from_utf8_lossy(&bytes));
        let mut out = Vec::new();
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            out.push(line);
        }
        futures_util::stream::iter(out.into_iter().map(Ok::<String, ApiError>))
    });
    lines
        .try_flatten()
        .try_filter_map(|line| async move { parse_sse_line(line.trim()) })
        .take_while(|item| futures_util::future::ready(!matches!(item, Err(e) if e.code == Some("done"))))
        .boxed()
}

fn parse_sse_line(line: &str) -> Result<Option<ChatCompletionChunk>, ApiError> {
    let Some(data) = line.strip_prefix("data:").map(str::trim) else { return Ok(None) };
    if data == "[DONE]" {
        return Err(ApiError::internal("end of stream").with_code("done"));
    }
    if let Ok(envelope) = serde_json::from_str::<ErrorEnvelope>(data) {
        return Err(ApiError {
            status: 502,
            kind: "upstream_error",
            message: envelope.error.message,
            param: None,
            code: None,
        });
    }
    serde_json::from_str(data).map(Some).map_err(|e| ApiError {
        status: 502,
        kind: "upstream_error",
        message: format!("bad upstream chunk: {e}"),
        param: None,
        code: None,
    })
}

#[cfg(test)]
mod tls_tests {
    use super::*;

    /// Loopback port 1 is closed: with TLS built in, `https` fails to connect; without it, reqwest
    /// refuses the scheme before connecting.
    #[tokio::test]
    async fn https_upstreams_are_supported() {
        let remote = RemoteBackend::new("https://127.0.0.1:1/v1", None, None, Duration::from_secs(1));
        let error = remote.client.get(format!("{}/models", remote.base_url())).send().await.unwrap_err();
        assert!(error.is_connect() && !format!("{error:?}").contains("scheme"), "{error:?}");
    }
}
