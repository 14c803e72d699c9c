//! The local engine as a [`ChatBackend`]: the gateway's innermost stage.

use std::time::Instant;

use futures_util::future::BoxFuture;
use sconce_gateway::{
    BackendTimings, ChatBackend, ChatCall, ChatOutcome, ChatResult, CompletionReply, Marks, Reply, ReplyStream,
};
use sconce_protocol::completion::CompletionRequest;
use sconce_protocol::ApiError;
use std::sync::Arc;

use crate::backend::Delta;
use crate::generation::DeltaStream;
use crate::respond::{self, ResponseFormat};
use crate::routes::{chat, completions};
use crate::state::{AppState, WeakAppState};

pub struct LocalChat {
    state: WeakAppState,
}

impl LocalChat {
    pub fn new(state: &AppState) -> Self {
        Self { state: state.downgrade() }
    }
}

impl ChatBackend for LocalChat {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        let _ = call.ctx.marks.backend_start.set(Instant::now());
        let state = self.state.upgrade();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::unavailable("the server is shutting down"))?;
            let (format, deltas) = chat::prepare(&state, &call.request)?;
            let reply = reply(format, deltas, call.ctx.marks, call.request.sampling.is_stream()).await?;
            Ok(ChatOutcome::new(reply))
        })
    }
}

/// `/v1/completions` on the local engine, under the gateway's meter and policy.
pub async fn completions(
    state: AppState,
    request: CompletionRequest,
    marks: Arc<Marks>,
) -> Result<CompletionReply, ApiError> {
    let _ = marks.backend_start.set(Instant::now());
    let (format, deltas) = completions::prepare(&state, &request)?;
    reply(format, deltas, marks, request.sampling.is_stream()).await
}

/// The chunks, or the whole response once generation ends.
async fn reply<Fmt: ResponseFormat>(
    format: Fmt,
    deltas: DeltaStream,
    marks: Arc<Marks>,
    stream: bool,
) -> Result<Reply<Fmt::Response, Fmt::Chunk>, ApiError> {
    Ok(if stream {
        Reply::Stream(chunks(format, deltas, marks))
    } else {
        Reply::Full(Box::new(collect(format, deltas, marks).await?))
    })
}

/// All chunks, always closed by the usage chunk (the HTTP layer hides it unless asked);
/// a stage's stop request ends them early with the usage so far.
fn chunks<Fmt: ResponseFormat>(mut format: Fmt, mut deltas: DeltaStream, marks: Arc<Marks>) -> ReplyStream<Fmt::Chunk> {
    Box::pin(async_stream::stream! {
        for chunk in format.opening(deltas.choices()) {
            yield Ok(chunk);
        }
        while let Some(delta) = deltas.next().await {
            note_timings(&marks, &delta);
            if let Some(chunk) = format.chunk(&delta) {
                yield Ok(chunk);
            }
            if marks.stop_requested() {
                // Dropping the deltas aborts the generation; bill what was generated.
                yield Ok(format.usage_chunk(deltas.usage_so_far()));
                return;
            }
        }
        if deltas.is_complete() {
            yield Ok(format.usage_chunk(deltas.usage()));
        } else {
            yield Err(respond::stopped_early());
        }
    })
}

async fn collect<Fmt: ResponseFormat>(
    format: Fmt,
    deltas: DeltaStream,
    marks: Arc<Marks>,
) -> Result<Fmt::Response, ApiError> {
    let deltas = deltas.on_delta(move |delta| note_timings(&marks, delta));
    respond::collect_value(format, deltas).await
}

fn note_timings(marks: &Marks, delta: &Delta) {
    if let Some(timings) = &delta.timings {
        let _ = marks.timings.set(BackendTimings {
            arrival: Some(timings.arrival),
            queued: timings.queued,
            prefill: timings.prefill,
            decode: timings.decode,
            time_to_first_token: timings.time_to_first_token,
        });
    }
}
