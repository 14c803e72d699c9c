//! The one stream loop: deltas become an endpoint's chunks, closed by the usage chunk;
//! a full reply is the same chunks folded. Cancelling the call ends generation early and
//! still closes with the usage of what ran.

use std::sync::Arc;

use futures_util::TryStreamExt;
use sconce_gateway::{Api, BackendTimings, Journal, ReplyStream};
use sconce_protocol::{ApiError, Usage};
use tokio_util::sync::CancellationToken;

use super::deltas::DeltaStream;
use crate::backend::{Delta, FinishReason};

/// How one endpoint shapes deltas into chunks.
pub trait ResponseFormat: Send + 'static {
    type Chunk: Send + 'static;

    /// Chunks sent before any token (chat's role announcement).
    fn opening(&mut self, choices: usize) -> Vec<Self::Chunk>;
    /// The chunk for one delta, or none when it shows nothing.
    fn chunk(&mut self, delta: &Delta) -> Option<Self::Chunk>;
    /// The closing `choices: []` chunk carrying the usage.
    fn usage_chunk(&self, usage: Usage) -> Self::Chunk;
    /// True when every chunk carries the usage so far (`continuous_usage_stats`).
    fn continuous_usage(&self) -> bool;
    /// Sets a chunk's usage (the running one, with `continuous_usage_stats`).
    fn set_usage(chunk: &mut Self::Chunk, usage: Usage);
}

/// Every chunk of one request, always closed by the usage chunk (the SSE encoder hides it
/// unless the client asked); an engine that stops early ends the stream with an error.
pub fn chunks<F: ResponseFormat>(
    mut format: F,
    mut deltas: DeltaStream,
    cancel: CancellationToken,
    journal: Arc<Journal>,
) -> ReplyStream<F::Chunk> {
    Box::pin(async_stream::stream! {
        let continuous = format.continuous_usage();
        for mut chunk in format.opening(deltas.choices()) {
            if continuous {
                F::set_usage(&mut chunk, deltas.usage_so_far());
            }
            yield Ok(chunk);
        }
        // One waiter for the whole stream, not one registered per delta.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut cancelled => None,
                delta = deltas.next() => Some(delta),
            };
            let Some(delta) = next else {
                // Cancelled: dropping the deltas aborts generation; bill what ran.
                yield Ok(format.usage_chunk(deltas.usage_so_far()));
                return;
            };
            let Some(delta) = delta else { break };
            if delta.finish_reason == Some(FinishReason::Error) {
                // A failed step: bill what ran, then end with a server error.
                yield Ok(format.usage_chunk(deltas.usage_so_far()));
                yield Err(engine_failed());
                return;
            }
            note_timings(&journal, &delta);
            if let Some(mut chunk) = format.chunk(&delta) {
                if continuous {
                    F::set_usage(&mut chunk, deltas.usage_so_far());
                }
                yield Ok(chunk);
            }
        }
        if deltas.is_complete() {
            yield Ok(format.usage_chunk(deltas.usage()));
        } else {
            yield Err(stopped_early());
        }
    })
}

/// Runs the chunks to the end and folds them into the full response.
pub async fn collect<A: Api>(chunks: ReplyStream<A::Chunk>) -> Result<A::Response, ApiError> {
    let chunks: Vec<A::Chunk> = chunks.try_collect().await?;
    A::fold(chunks).ok_or_else(stopped_early)
}

pub fn engine_failed() -> ApiError {
    ApiError::internal("the engine failed while generating this request")
}

pub fn stopped_early() -> ApiError {
    ApiError::internal("the engine stopped before the request finished")
}

/// The engine's timings of the request, for the meter and the trace.
fn note_timings(journal: &Journal, delta: &Delta) {
    if let Some(timings) = &delta.timings {
        let _ = journal.timings.set(BackendTimings {
            arrival: Some(timings.arrival),
            queued: timings.queued,
            prefill: timings.prefill,
            decode: timings.decode,
            time_to_first_token: timings.time_to_first_token,
        });
    }
}
