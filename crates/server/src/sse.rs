//! The one writer of every endpoint's replies: a JSON body, or SSE events closed by
//! `data: [DONE]`, with the usage chunk only when the client asked for it, errors as
//! OpenAI envelopes, and the headers the stages attached.

use std::convert::Infallible;

use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use sconce_gateway::{Api, ApiReply, CallResult, ExtraHeaders, Reply, ReplyStream};
use sconce_protocol::{ApiError, STREAM_DONE};
use serde::Serialize;

use crate::http::HttpError;

/// The HTTP response for what the pipeline answered.
pub fn respond<A: Api>(result: CallResult<A>, include_usage: bool) -> Response {
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

/// SSE of the chunks; the closing usage chunk only when the client asked for it. An error
/// mid-stream is sent as an envelope event, then `[DONE]`.
fn sse<C: ApiReply>(stream: ReplyStream<C>, include_usage: bool) -> Response {
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

/// One SSE event; a chunk that cannot be serialized becomes an error event.
fn event<T: Serialize>(chunk: &T) -> Event {
    match serde_json::to_string(chunk) {
        Ok(json) => Event::default().data(json),
        Err(error) => {
            let envelope = ApiError::internal(format!("cannot encode a chunk: {error}")).envelope();
            Event::default().data(serde_json::to_string(&envelope).unwrap_or_default())
        }
    }
}

pub fn with_headers(mut response: Response, headers: ExtraHeaders) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}
