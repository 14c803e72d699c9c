//! The local engine as the innermost backend of every endpoint: render and tokenize the
//! prompt (large ones off the async workers), submit one engine request per prompt,
//! merge the choices' deltas and shape them into the endpoint's chunks or full reply.

pub mod chat;
pub mod completions;
pub mod deltas;
pub mod embeddings;
pub mod serving;
pub mod spec;
pub mod stream;
pub mod tool_stream;
pub mod tools;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use sconce_gateway::{reply_id, Api, ApiRequest, Backend, Call, CallResult, Failure, Outcome, Reply};
use sconce_protocol::{ApiError, RequestLimits};

use crate::backend::{Backend as Engine, GenerateRequest};
use serving::Serving;
use spec::ResponseMeta;
use stream::ResponseFormat;

/// Prompts estimated at this many tokens or more are rendered and tokenized on the
/// blocking pool, so a few huge prompts cannot stall `/health` and every stream.
const BLOCKING_PROMPT_TOKENS: u64 = 16 << 10;

/// A request ready for the engine: how its deltas read, and one engine request per prompt.
pub struct Prepared<F> {
    pub format: F,
    pub requests: Vec<GenerateRequest>,
}

/// An endpoint the local engine serves.
pub trait LocalApi: Api {
    type Format: ResponseFormat<Chunk = Self::Chunk>;

    /// Checks (within `limits`), renders and tokenizes: CPU work that may run on the
    /// blocking pool. `id` is the request id; `meta` the reply's id, creation time and model.
    fn prepare(
        backend: &Engine,
        request: &Self::Request,
        id: &str,
        meta: ResponseMeta,
        limits: &RequestLimits,
    ) -> Result<Prepared<Self::Format>, ApiError>;

    /// Last touches on a full reply folded from the chunks.
    fn finish(_request: &Self::Request, _response: &mut Self::Response) {}

    /// Whether preparing may compile a grammar (then it runs on the blocking pool).
    fn constrains(_request: &Self::Request) -> bool {
        false
    }
}

/// The local engine behind the stages; cheap to clone.
#[derive(Clone)]
pub struct LocalEngine {
    serving: Arc<Serving>,
}

impl LocalEngine {
    pub fn new(serving: Arc<Serving>) -> Self {
        Self { serving }
    }
}

impl<A: LocalApi> Backend<A> for LocalEngine {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let _ = call.ctx.journal.backend_start.set(Instant::now());
        let serving = self.serving.clone();
        Box::pin(async move { generate::<A>(serving, call).await.map(Outcome::new).map_err(Failure::from) })
    }
}

async fn generate<A: LocalApi>(serving: Arc<Serving>, call: Call<A>) -> Result<Reply<A>, ApiError> {
    let engine = serving.serving()?.backend.clone();
    serving.check_model(&engine, call.request.model())?;
    let Call { request, ctx } = call;
    let meta = ResponseMeta::new(reply_id::<A>(&ctx.request_id), &engine.info().name);
    let limits = serving.limits().clone();
    let (request, prepared) = prepare::<A>(engine.clone(), request, ctx.request_id.clone(), meta, limits).await?;
    let prompt_param = <A::Request as ApiRequest>::PROMPT_PARAM;
    let deltas =
        deltas::start(&serving, &engine, &ctx.request_id, prepared.requests, prompt_param, ctx.journal.clone())?;
    let chunks = stream::chunks(prepared.format, deltas, ctx.cancel.clone(), ctx.journal.clone());
    if request.is_stream() {
        return Ok(Reply::Stream(chunks));
    }
    let mut response = stream::collect::<A>(chunks).await?;
    A::finish(&request, &mut response);
    Ok(Reply::Full(Box::new(response)))
}

/// [`LocalApi::prepare`], on the blocking pool for large prompts.
async fn prepare<A: LocalApi>(
    engine: Engine,
    request: A::Request,
    id: String,
    meta: ResponseMeta,
    limits: RequestLimits,
) -> Result<(A::Request, Prepared<A::Format>), ApiError> {
    if request.estimated_prompt_tokens() < BLOCKING_PROMPT_TOKENS && !A::constrains(&request) {
        let prepared = A::prepare(&engine, &request, &id, meta, &limits)?;
        return Ok((request, prepared));
    }
    let work = move || A::prepare(&engine, &request, &id, meta, &limits).map(|prepared| (request, prepared));
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?
}
