//! Request handlers, one module per API area. An inference route only parses and
//! validates the body into a [`Call`] and hands it to the pipeline.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod health;
pub mod models;

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use sconce_gateway::route::RequestHints;
use sconce_gateway::telemetry::TraceParent;
use sconce_gateway::{Api, ApiRequest, Call, CallContext, Principal};

use crate::gateway::http::Caller;
use crate::http::HttpError;
use crate::request_id;
use crate::state::AppState;

/// The call's context from the request head: its id, caller, hints and trace parent.
pub struct CallHead(pub CallContext);

impl FromRequestParts<AppState> for CallHead {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Infallible> {
        let id = request_id::from_headers(&parts.headers);
        let mut ctx = match parts.extensions.get::<Caller>() {
            Some(caller) => {
                let ctx = CallContext::received_at(id, caller.principal.clone(), caller.received);
                ctx.journal.stages.record("auth", caller.received, caller.authenticated);
                ctx
            }
            None => CallContext::new(id, Principal::default()),
        };
        ctx.hints = hints(&parts.headers);
        ctx.trace_parent = header(&parts.headers, "traceparent").and_then(TraceParent::parse);
        Ok(Self(ctx))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `x-sconce-tier` and `Cache-Control`.
fn hints(headers: &HeaderMap) -> RequestHints {
    let hints = RequestHints { tier: header(headers, "x-sconce-tier").map(str::to_string), ..RequestHints::default() };
    match header(headers, "cache-control") {
        Some(value) => hints.with_cache_control(value),
        None => hints,
    }
}

/// Validates the request and runs it through the pipeline; the reply as HTTP.
pub async fn run<A: Api>(state: &AppState, CallHead(ctx): CallHead, request: A::Request) -> Response {
    if let Err(error) = request.validate(&state.settings().limits) {
        return HttpError(error).into_response();
    }
    let include_usage = request.include_usage();
    let result = state.pipeline().call::<A>(Call { request, ctx }).await;
    crate::sse::respond(result, include_usage)
}
