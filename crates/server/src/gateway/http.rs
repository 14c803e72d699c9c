//! The gateway's HTTP side: the auth middleware, the chat path through the stages and
//! the completions path through the meter and the policy.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use sconce_gateway::endpoint::EndpointReply;
use sconce_gateway::{CallContext, CallResult, ChatCall, ExtraHeaders, Principal, Reply, ReplyStream};
use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::completion::CompletionRequest;
use sconce_protocol::STREAM_DONE;
use serde::Serialize;

use super::GatewayHandle;
use crate::http::HttpError;
use crate::respond::event;
use crate::state::AppState;

/// Who called and when the request arrived, set by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub received: Instant,
    /// When authentication finished (the end of the `auth` stage in traces).
    pub authenticated: Instant,
}

/// Paths that stay open with auth on (probes and scraping).
const OPEN_PATHS: &[&str] = &["/health", "/ready", "/version", "/metrics"];

/// Resolves the bearer key into a [`Caller`]; 401 in the OpenAI envelope when it fails.
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let received = Instant::now();
    let Some(handle) = state.gateway() else {
        return next.run(request).await;
    };
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let header = request.headers().get(AUTHORIZATION).and_then(|value| value.to_str().ok());
    match handle.gateway.auth.authenticate(header, sconce_gateway::usage::unix_now()) {
        Ok(principal) => {
            request.extensions_mut().insert(Caller { principal, received, authenticated: Instant::now() });
            next.run(request).await
        }
        Err(error) => HttpError(error).into_response(),
    }
}

/// Runs one chat request through the gateway stages.
pub async fn chat(
    handle: &GatewayHandle,
    caller: Option<Caller>,
    request: ChatCompletionRequest,
    hints: sconce_gateway::route::RequestHints,
) -> Response {
    let include_usage = request.sampling.include_usage();
    let mut ctx = context(caller);
    ctx.hints = hints;
    respond(handle.pipeline.chat(ChatCall { request, ctx }).await, include_usage)
}

/// Runs one completions request through the gateway's meter and policy to the local engine.
pub async fn completions(
    state: &AppState,
    handle: &GatewayHandle,
    caller: Option<Caller>,
    request: CompletionRequest,
) -> Response {
    let include_usage = request.sampling.include_usage();
    let state = state.clone();
    let backend = move |request, ctx: CallContext| super::local::completions(state, request, ctx.marks);
    respond(handle.gateway.serve(context(caller), request, backend).await, include_usage)
}

/// A new request's context: its id, caller and arrival (the `auth` stage in traces).
fn context(caller: Option<Caller>) -> CallContext {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    match caller {
        Some(caller) => {
            let ctx = CallContext::received_at(request_id, caller.principal, caller.received);
            ctx.marks.stages.record("auth", caller.received, caller.authenticated);
            ctx
        }
        None => CallContext::new(request_id, Principal::default()),
    }
}

/// The HTTP response for what the stages answered, with the headers they attached.
fn respond<F, C>(result: CallResult<Reply<F, C>>, include_usage: bool) -> Response
where
    F: Serialize,
    C: Serialize + EndpointReply,
{
    match result {
        Ok(outcome) => {
            let response = match outcome.reply {
                Reply::Full(body) => Json(body).into_response(),
                Reply::Stream(stream) => sse(stream, include_usage),
            };
            with_headers(response, outcome.headers)
        }
        Err(failure) => with_headers(HttpError(failure.error).into_response(), failure.headers),
    }
}

/// SSE of the chunks; the closing usage chunk only when the client asked for it.
fn sse<C: Serialize + EndpointReply>(stream: ReplyStream<C>, include_usage: bool) -> Response {
    let events = stream
        .filter_map(move |item| {
            std::future::ready(match item {
                Ok(chunk) if !include_usage && chunk.is_usage_only() => None,
                Ok(chunk) => Some(event(&chunk)),
                Err(error) => Some(event(&error.envelope())),
            })
        })
        .chain(futures_util::stream::once(std::future::ready(Event::default().data(STREAM_DONE))))
        .map(Ok::<_, Infallible>);
    Sse::new(events).into_response()
}

pub fn with_headers(mut response: Response, headers: ExtraHeaders) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}
