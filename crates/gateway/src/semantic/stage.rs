//! The semantic cache stage, written once for every endpoint (only chat requests have a
//! lookup; `Stage::applies_to` keeps it out of `/v1/completions`).

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::partition::{lookup_key, LookupKey};
use super::{SemanticCache, SEMANTIC_HIT, SIMILARITY_HEADER};
use crate::api::{Api, Backend, Call, CallResult, Outcome, Reply, Service};
use crate::cache::replay::{collect_into, hit, is_complete};
use crate::cache::CACHE_HEADER;
use crate::endpoint::ApiRequest;

/// The semantic cache over one endpoint's inner stages.
pub struct SemanticStage<A: Api> {
    cache: Arc<SemanticCache>,
    inner: Service<A>,
}

impl<A: Api> SemanticStage<A> {
    pub fn new(cache: Arc<SemanticCache>, inner: Service<A>) -> Self {
        Self { cache, inner }
    }
}

impl<A: Api> Backend<A> for SemanticStage<A> {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        Box::pin(semantic_call(self.cache.clone(), self.inner.clone(), call))
    }
}

/// The lookup of a request the cache takes part in: a deterministic chat request for a
/// covered model, with a user message.
fn plan<A: Api>(cache: &SemanticCache, call: &Call<A>) -> Option<(String, LookupKey)> {
    let model = call.request.model().unwrap_or_default().to_string();
    if !call.request.is_deterministic() || !cache.config.covers(&model) {
        return None;
    }
    let prompt = call.ctx.prompt.as_ref().map(ToString::to_string);
    let team = cache.config.partition_by_team.then_some(call.ctx.principal.team.as_str());
    let key = lookup_key::<A>(&call.request, &model, prompt.as_deref(), team)?;
    Some((model, key))
}

async fn semantic_call<A: Api>(cache: Arc<SemanticCache>, inner: Service<A>, call: Call<A>) -> CallResult<A> {
    let Some((model, key)) = plan(&cache, &call) else { return inner.call(call).await };
    let started = Instant::now();
    let no_store = call.ctx.hints.no_store;
    // Speculation: the generation starts now and runs while the question is embedded.
    let mut generation = match cache.config.speculate && !call.ctx.hints.no_cache {
        true => Some(inner.call(Call { request: call.request.clone(), ctx: call.ctx.clone() })),
        false => None,
    };
    let embedded = match generation.as_mut() {
        Some(running) => embed_beside(&cache, &key.text, running).await,
        None => Embedded::Vector(cache.embed(&key.text).await),
    };
    let (vector, answered) = match embedded {
        Embedded::Vector(Some(vector)) => (vector, None),
        // The answer came first: it still goes out only on a miss, so hits do not hang on timing.
        Embedded::Answered(outcome, Some(vector)) => (vector, Some(outcome)),
        Embedded::Answered(outcome, None) => return outcome,
        Embedded::Vector(None) => return generation.unwrap_or_else(|| inner.call(call)).await,
    };
    if !call.ctx.hints.no_cache {
        if let Some(found) = cache.lookup::<A>(&model, &key, &vector, started) {
            // Dropping a speculative generation aborts it and frees what it holds.
            drop((generation, answered));
            let reply = hit::<A>(found.response, &call.ctx.request_id, call.request.is_stream());
            return Ok(Outcome::new(reply)
                .with_header("x-sconce-model", model)
                .with_header(CACHE_HEADER, SEMANTIC_HIT)
                .with_header(SIMILARITY_HEADER, format!("{:.4}", found.similarity)));
        }
    }
    let outcome = match answered {
        Some(outcome) => outcome?,
        None => generation.unwrap_or_else(|| inner.call(call)).await?,
    };
    finish(cache, key.partition, vector, outcome, no_store)
}

/// What came first while embedding beside a running generation.
enum Embedded<A: Api> {
    Vector(Option<Vec<f32>>),
    /// The generation finished first (with the vector, embedded after it).
    Answered(CallResult<A>, Option<Vec<f32>>),
}

async fn embed_beside<A: Api>(
    cache: &SemanticCache,
    text: &str,
    generation: &mut BoxFuture<'static, CallResult<A>>,
) -> Embedded<A> {
    let embedding = cache.embed(text);
    tokio::pin!(embedding);
    tokio::select! {
        biased;
        vector = &mut embedding => Embedded::Vector(vector),
        outcome = generation => Embedded::Answered(outcome, embedding.await),
    }
}

/// A miss: the answer goes out, and is stored when it may be.
fn finish<A: Api>(
    cache: Arc<SemanticCache>,
    partition: String,
    vector: Vec<f32>,
    outcome: Outcome<A>,
    no_store: bool,
) -> CallResult<A> {
    if no_store {
        return Ok(outcome.with_header(CACHE_HEADER, "miss"));
    }
    Ok(fill(cache, partition, vector, outcome).with_header(CACHE_HEADER, "miss"))
}

/// Stores full answers now, and streams once they end complete (never when cut short).
fn fill<A: Api>(cache: Arc<SemanticCache>, partition: String, vector: Vec<f32>, outcome: Outcome<A>) -> Outcome<A> {
    let Outcome { reply, headers } = outcome;
    let keep = move |response: &A::Response| {
        if is_complete(response) {
            cache.store(partition, vector, response);
        }
    };
    let reply = match reply {
        Reply::Full(response) => {
            keep(response.as_ref());
            Reply::Full(response)
        }
        Reply::Stream(stream) => Reply::Stream(collect_into::<A>(stream, move |response| keep(&response))),
    };
    Outcome { reply, headers }
}
