//! A remote OpenAI-compatible upstream (another Sconce, vLLM, ...) for every endpoint.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use sconce_protocol::common::StreamOptions;
use sconce_protocol::error::ErrorEnvelope;
use sconce_protocol::ApiError;

use crate::api::{Api, Backend, Call, CallResult, Outcome, Reply, ReplyStream};
use crate::endpoint::{ApiReply, ApiRequest};
use crate::error::{known_upstream_code, GatewayError};

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

    /// The upstream's model name; streams always ask for the usage chunk (for metering),
    /// and pass on a client's `continuous_usage_stats`.
    fn prepare<R: ApiRequest>(&self, mut request: R) -> R {
        if let Some(model) = &self.model {
            request.set_model(model.clone());
        }
        if request.is_stream() {
            let continuous_usage_stats = request.sampling().continuous_usage();
            request.sampling_mut().stream_options = Some(StreamOptions { include_usage: true, continuous_usage_stats });
        }
        request
    }
}

/// Every endpoint, at the same path under the upstream's `/v1`; the request id travels along.
impl<A: Api> Backend<A> for RemoteBackend {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let request = self.prepare(call.request);
        let journal = call.ctx.journal.clone();
        let mut builder = self.client.post(format!("{}{}", self.base_url, A::PATH)).json(&request);
        builder = builder.header("x-request-id", call.ctx.request_id.as_str());
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        Box::pin(async move {
            let response = builder.send().await.map_err(GatewayError::Transport)?;
            if !response.status().is_success() {
                return Err(upstream_error(response).await.into());
            }
            let reply = if request.is_stream() {
                journal.live.set_prompt(request.estimated_prompt_tokens(), 0);
                Reply::Stream(counted(sse_chunks::<A::Chunk>(response), journal))
            } else {
                let body: A::Response = response.json().await.map_err(GatewayError::Transport)?;
                Reply::Full(Box::new(body))
            };
            Ok(Outcome::new(reply))
        })
    }
}

async fn upstream_error(response: reqwest::Response) -> GatewayError {
    let status = response.status().as_u16();
    let envelope: Option<ErrorEnvelope> = response.json().await.ok();
    let (message, code) =
        envelope.map_or((format!("upstream answered {status}"), None), |e| (e.error.message, e.error.code));
    GatewayError::Upstream { status, message, code: code.as_deref().and_then(known_upstream_code) }
}

/// An SSE line's payload: a chunk, the end, or nothing (comments, blank lines).
enum SseLine<C> {
    Chunk(C),
    Done,
    Skip,
}

fn sse_chunks<C: ApiReply>(response: reqwest::Response) -> ReplyStream<C> {
    let mut buffer = String::new();
    let transport = |error| ApiError::from(GatewayError::Transport(error));
    let lines = response.bytes_stream().map_err(transport).map_ok(move |bytes| {
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
        .and_then(|line| async move { parse_sse_line::<C>(line.trim()) })
        .take_while(|item| futures_util::future::ready(!matches!(item, Ok(SseLine::Done))))
        .try_filter_map(|line| async move {
            Ok(match line {
                SseLine::Chunk(chunk) => Some(chunk),
                SseLine::Done | SseLine::Skip => None,
            })
        })
        .boxed()
}

/// Counts an upstream stream's tokens as they arrive, for a stream that ends early: one
/// token per choice that shows text in a chunk (an estimate; upstreams send one or a few
/// tokens a chunk). The prompt counts at the gateway's estimate. A chunk's own usage
/// (`continuous_usage_stats`) and the closing usage chunk are exact and the meter prefers them.
fn counted<C: ApiReply>(chunks: ReplyStream<C>, journal: std::sync::Arc<crate::Journal>) -> ReplyStream<C> {
    chunks
        .map_ok(move |mut chunk| {
            let shown = chunk.texts_mut().iter().filter(|choice| !choice.text.as_str().is_empty()).count();
            journal.live.add_completion(shown as u64);
            chunk
        })
        .boxed()
}

fn parse_sse_line<C: ApiReply>(line: &str) -> Result<SseLine<C>, ApiError> {
    let Some(data) = line.strip_prefix("data:").map(str::trim) else { return Ok(SseLine::Skip) };
    if data == "[DONE]" {
        return Ok(SseLine::Done);
    }
    if let Ok(envelope) = serde_json::from_str::<ErrorEnvelope>(data) {
        return Err(GatewayError::Upstream { status: 502, message: envelope.error.message, code: None }.into());
    }
    serde_json::from_str(data).map(SseLine::Chunk).map_err(|e| GatewayError::BadUpstreamReply(e.to_string()).into())
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
