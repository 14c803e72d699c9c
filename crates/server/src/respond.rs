//! Turns a [`DeltaStream`] into either an SSE stream or one JSON response, through the
//! same per-endpoint [`ResponseFormat`], so both carry the same text, logprobs and usage.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use sconce_protocol::{ApiError, Usage, STREAM_DONE};
use serde::Serialize;

use crate::backend::Delta;
use crate::generation::DeltaStream;

/// How one endpoint shapes deltas into chunks and chunks into a full response.
pub trait ResponseFormat: Send + 'static {
    type Chunk: Serialize + Send;
    type Response: Serialize;

    /// Chunks sent before any token (chat's role announcement).
    fn opening(&mut self, choices: usize) -> Vec<Self::Chunk>;
    /// The chunk for one delta, or none when it shows nothing.
    fn chunk(&mut self, delta: &Delta) -> Option<Self::Chunk>;
    /// The closing `choices: []` chunk carrying the usage.
    fn usage_chunk(&self, usage: Usage) -> Self::Chunk;
    /// Folds a chunk into the non-streamed response.
    fn absorb(&mut self, chunk: Self::Chunk);
    fn into_response(self, usage: Usage) -> Self::Response;
}

/// Streams or answers with one body, as the request asked.
pub async fn answer<F: ResponseFormat>(
    format: F,
    deltas: DeltaStream,
    streamed: bool,
    include_usage: bool,
) -> Result<Response, ApiError> {
    if streamed {
        Ok(stream(format, deltas, include_usage))
    } else {
        collect(format, deltas).await
    }
}

/// Streams `data: {chunk}` events and the closing `data: [DONE]`.
pub fn stream<F: ResponseFormat>(format: F, deltas: DeltaStream, include_usage: bool) -> Response {
    Sse::new(events(format, deltas, include_usage)).into_response()
}

fn events<F: ResponseFormat>(
    mut format: F,
    mut deltas: DeltaStream,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        for chunk in format.opening(deltas.choices()) {
            yield Ok(event(&chunk));
        }
        while let Some(delta) = deltas.next().await {
            if let Some(chunk) = format.chunk(&delta) {
                yield Ok(event(&chunk));
            }
        }
        if !deltas.is_complete() {
            yield Ok(event(&stopped_early().envelope()));
        } else if include_usage {
            yield Ok(event(&format.usage_chunk(deltas.usage())));
        }
        yield Ok(Event::default().data(STREAM_DONE));
    }
}

/// One SSE event; a chunk that cannot be serialized becomes an error event.
pub(crate) fn event<T: Serialize>(chunk: &T) -> Event {
    match serde_json::to_string(chunk) {
        Ok(json) => Event::default().data(json),
        Err(error) => {
            let envelope = ApiError::internal(format!("cannot encode a chunk: {error}")).envelope();
            Event::default().data(serde_json::to_string(&envelope).unwrap_or_default())
        }
    }
}

/// Runs the request to the end and answers with one JSON body.
pub async fn collect<F: ResponseFormat>(format: F, deltas: DeltaStream) -> Result<Response, ApiError> {
    Ok(Json(collect_value(format, deltas).await?).into_response())
}

/// Runs the request to the end and returns the response value.
pub async fn collect_value<F: ResponseFormat>(mut format: F, mut deltas: DeltaStream) -> Result<F::Response, ApiError> {
    for chunk in format.opening(deltas.choices()) {
        format.absorb(chunk);
    }
    while let Some(delta) = deltas.next().await {
        if let Some(chunk) = format.chunk(&delta) {
            format.absorb(chunk);
        }
    }
    if !deltas.is_complete() {
        return Err(stopped_early());
    }
    Ok(format.into_response(deltas.usage()))
}

pub fn stopped_early() -> ApiError {
    ApiError::internal("the engine stopped before the request finished")
}
