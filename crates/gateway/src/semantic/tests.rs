#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use sconce_protocol::chat::{ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::Usage;
use serde_json::{json, Value};

use super::*;
use crate::api::{reply_id, Backend, Call, CallResult, Chat, Outcome, Reply, Service};
use crate::cache::{CacheConfig, ResponseCache, CACHE_HEADER};
use crate::endpoint::{ApiReply, ApiRequest};
use crate::prompts::PromptTag;
use crate::route::RequestHints;
use crate::stack::{Pipeline, Stage};
use crate::{CallContext, Principal};

/// A stand-in for the embedding model: a hashed bag of lowercase words, unit length.
pub(crate) struct Words {
    pub calls: AtomicUsize,
}

pub(crate) fn bag(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0f32; 1024];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        vector[(hash % 1024) as usize] += 1.0;
    }
    index::normalized(vector)
}

impl Embedder for Words {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let vectors = texts.iter().map(|text| bag(text)).collect();
        Box::pin(async move { Ok(vectors) })
    }
}

/// Answers "Answer number N" (N counts its calls), full or streamed.
struct Numbered {
    calls: AtomicUsize,
}

impl<A: Api> Backend<A> for Numbered {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            let id = reply_id::<A>(&call.ctx.request_id);
            let mut response = A::text_response(id, "m", &format!("Answer number {n}"));
            *response.usage_mut().unwrap() = Usage::new(7, 3, 0);
            let reply = if call.request.is_stream() {
                Reply::Stream(futures_util::stream::iter(A::replay(&response).into_iter().map(Ok)).boxed())
            } else {
                Reply::Full(Box::new(response))
            };
            Ok(Outcome::new(reply))
        })
    }
}

struct Setup {
    words: Arc<Words>,
    upstream: Arc<Numbered>,
    cache: Arc<SemanticCache>,
    stage: Service<Chat>,
}

fn setup(config: SemanticCacheConfig) -> Setup {
    let words = Arc::new(Words { calls: AtomicUsize::new(0) });
    let upstream = Arc::new(Numbered { calls: AtomicUsize::new(0) });
    let cache = Arc::new(SemanticCache::in_memory(config, words.clone()));
    let stage: Service<Chat> = Arc::new(SemanticStage::<Chat>::new(cache.clone(), upstream.clone()));
    Setup { words, upstream, cache, stage }
}

/// Without speculation, so each test sees exactly the upstream calls its misses make.
fn config() -> SemanticCacheConfig {
    SemanticCacheConfig { enabled: true, threshold: 0.85, speculate: false, ..SemanticCacheConfig::default() }
}

fn question(text: &str) -> Value {
    json!({"model": "m", "temperature": 0.0, "messages": [{"role": "user", "content": text}]})
}

fn call(id: &str, team: &str, body: Value) -> Call<Chat> {
    let request: ChatCompletionRequest = serde_json::from_value(body).unwrap();
    let principal = Principal { team: team.into(), ..Principal::default() };
    Call { request, ctx: CallContext::new(id, principal) }
}

fn header<'a>(outcome: &'a Outcome<Chat>, name: &str) -> Option<&'a str> {
    outcome.headers.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
}

fn full(outcome: Outcome<Chat>) -> ChatCompletionResponse {
    let Reply::Full(response) = outcome.reply else { panic!("a full reply") };
    *response
}

const CAPITAL: &str = "What is the capital of France?";
const PARAPHRASE: &str = "what is the capital city of France";

#[tokio::test]
async fn a_paraphrase_hits_with_the_cached_answer_and_an_unrelated_question_misses() {
    let s = setup(config());
    let first = s.stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&first, CACHE_HEADER), Some("miss"));
    let paraphrase = s.stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&paraphrase, CACHE_HEADER), Some(SEMANTIC_HIT));
    let similarity: f32 = header(&paraphrase, SIMILARITY_HEADER).unwrap().parse().unwrap();
    let expected = 6.0 / 42f32.sqrt(); // six shared words out of six and seven
    assert!((similarity - expected).abs() < 1e-3, "{similarity} vs {expected}");
    let hit = full(paraphrase);
    assert_eq!(hit.choices[0].message.content, "Answer number 1");
    assert_eq!(hit.id, "chatcmpl-r2", "a hit answers with the current request's id");
    assert_eq!(hit.usage.prompt_tokens_details.cached_tokens, hit.usage.prompt_tokens, "metered as cached");
    let unrelated = s.stage.call(call("r3", "t", question("How do I bake sourdough bread?"))).await.unwrap();
    assert_eq!(header(&unrelated, CACHE_HEADER), Some("miss"));
    assert_eq!(full(unrelated).choices[0].message.content, "Answer number 2");
    assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn below_the_threshold_is_a_miss() {
    let s = setup(SemanticCacheConfig { threshold: 0.95, ..config() });
    s.stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    let paraphrase = s.stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&paraphrase, CACHE_HEADER), Some("miss"));
}

#[tokio::test]
async fn the_same_question_from_another_team_misses_unless_teams_share() {
    let s = setup(config());
    s.stage.call(call("r1", "red", question(CAPITAL))).await.unwrap();
    let other = s.stage.call(call("r2", "blue", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&other, CACHE_HEADER), Some("miss"));
    let own = s.stage.call(call("r3", "blue", question(PARAPHRASE))).await.unwrap();
    assert_eq!(full(own).choices[0].message.content, "Answer number 2", "blue's own answer");
    let shared = setup(SemanticCacheConfig { partition_by_team: false, ..config() });
    shared.stage.call(call("r1", "red", question(CAPITAL))).await.unwrap();
    let other = shared.stage.call(call("r2", "blue", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&other, CACHE_HEADER), Some(SEMANTIC_HIT));
}

#[tokio::test]
async fn another_temperature_model_format_or_prompt_version_misses() {
    let s = setup(config());
    s.stage.call(call("r0", "t", question(CAPITAL))).await.unwrap();
    let variants = [
        json!({"temperature": 0.7, "seed": 1}),
        json!({"model": "other"}),
        json!({"response_format": {"type": "json_object"}}),
        json!({"max_tokens": 5}),
        json!({"n": 2}),
    ];
    for (i, variant) in variants.into_iter().enumerate() {
        let mut body = question(PARAPHRASE);
        body.as_object_mut().unwrap().extend(variant.as_object().unwrap().clone());
        let outcome = s.stage.call(call(&format!("v{i}"), "t", body.clone())).await.unwrap();
        assert_eq!(header(&outcome, CACHE_HEADER), Some("miss"), "{body}");
    }
    let mut versioned = call("p", "t", question(PARAPHRASE));
    versioned.ctx.prompt = Some(PromptTag { name: "faq".into(), version: 2, label: None, model: None });
    assert_eq!(header(&s.stage.call(versioned).await.unwrap(), CACHE_HEADER), Some("miss"));
    let earlier_turns = json!({"model": "m", "temperature": 0.0, "messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": PARAPHRASE}]});
    assert_eq!(header(&s.stage.call(call("e", "t", earlier_turns)).await.unwrap(), CACHE_HEADER), Some("miss"));
    assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn a_sampling_request_neither_hits_nor_stores() {
    let s = setup(config());
    s.stage.call(call("r0", "t", question(CAPITAL))).await.unwrap();
    let mut sampling = question(CAPITAL);
    sampling["temperature"] = json!(0.7);
    let outcome = s.stage.call(call("r1", "t", sampling.clone())).await.unwrap();
    assert_eq!(header(&outcome, CACHE_HEADER), None, "the stage sat it out");
    assert_eq!(s.cache.len(), 1);
    let mut other = sampling;
    other["messages"][0]["content"] = json!("Name a prime number");
    s.stage.call(call("r2", "t", other.clone())).await.unwrap();
    s.stage.call(call("r3", "t", other)).await.unwrap();
    assert_eq!((s.cache.len(), s.upstream.calls.load(Ordering::SeqCst)), (1, 4));
    assert_eq!(s.words.calls.load(Ordering::SeqCst), 1, "sampling requests are not even embedded");
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let s = setup(SemanticCacheConfig { ttl_secs: 1, ..config() });
    s.stage.call(call("r0", "t", question(CAPITAL))).await.unwrap();
    let fresh = s.stage.call(call("r1", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&fresh, CACHE_HEADER), Some(SEMANTIC_HIT));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = s.stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&stale, CACHE_HEADER), Some("miss"));
}

#[tokio::test]
async fn beyond_max_entries_the_least_recently_used_is_evicted() {
    let s = setup(SemanticCacheConfig { max_entries: 2, ..config() });
    for (i, text) in [CAPITAL, "Who wrote Hamlet?", "How tall is Everest?"].into_iter().enumerate() {
        s.stage.call(call(&format!("r{i}"), "t", question(text))).await.unwrap();
    }
    assert_eq!(s.cache.len(), 2);
    let evicted = s.stage.call(call("a", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&evicted, CACHE_HEADER), Some("miss"));
    let kept = s.stage.call(call("b", "t", question("how tall is everest"))).await.unwrap();
    assert_eq!(header(&kept, CACHE_HEADER), Some(SEMANTIC_HIT));
}

#[tokio::test]
async fn no_cache_skips_the_lookup_and_no_store_the_store() {
    let s = setup(config());
    let mut no_store = call("r0", "t", question(CAPITAL));
    no_store.ctx.hints = RequestHints::default().with_cache_control("no-store");
    s.stage.call(no_store).await.unwrap();
    assert!(s.cache.is_empty());
    s.stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    let mut no_cache = call("r2", "t", question(PARAPHRASE));
    no_cache.ctx.hints = RequestHints::default().with_cache_control("no-cache");
    let outcome = s.stage.call(no_cache).await.unwrap();
    assert_eq!(header(&outcome, CACHE_HEADER), Some("miss"));
    assert_eq!(full(outcome).choices[0].message.content, "Answer number 3");
}

#[tokio::test]
async fn a_streamed_hit_replays_chunks_that_fold_to_the_cached_answer() {
    let s = setup(config());
    let cached = full(s.stage.call(call("r1", "t", question(CAPITAL))).await.unwrap());
    let mut body = question(PARAPHRASE);
    body["stream"] = json!(true);
    let outcome = s.stage.call(call("r2", "t", body)).await.unwrap();
    assert_eq!(header(&outcome, CACHE_HEADER), Some(SEMANTIC_HIT));
    let Reply::Stream(stream) = outcome.reply else { panic!("a stream") };
    let chunks: Vec<_> = stream.map(|c| c.unwrap()).collect().await;
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.id == "chatcmpl-r2"));
    let folded = Chat::fold(chunks).unwrap();
    assert_eq!(folded.choices, cached.choices);
    assert_eq!(folded.usage.completion_tokens, cached.usage.completion_tokens);
}

#[tokio::test]
async fn a_streamed_miss_is_stored_once_it_ends_complete() {
    let s = setup(config());
    let mut body = question(CAPITAL);
    body["stream"] = json!(true);
    let outcome = s.stage.call(call("r1", "t", body)).await.unwrap();
    let Reply::Stream(stream) = outcome.reply else { panic!("a stream") };
    assert!(s.cache.is_empty(), "not before it ends");
    let _: Vec<_> = stream.collect().await;
    let hit = s.stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(full(hit).choices[0].message.content, "Answer number 1");
}

#[tokio::test]
async fn models_outside_the_list_pass_through() {
    let s = setup(SemanticCacheConfig { models: vec!["chat".into()], ..config() });
    s.stage.call(call("r0", "t", question(CAPITAL))).await.unwrap();
    let outcome = s.stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&outcome, CACHE_HEADER), None);
    assert_eq!((s.cache.len(), s.words.calls.load(Ordering::SeqCst)), (0, 0));
}

/// Exact cache outside, semantic inside: an exact repeat never reaches the semantic stage,
/// and a semantic hit is never stored under the paraphrase's exact key.
#[tokio::test]
async fn with_both_caches_an_exact_repeat_is_an_exact_hit() {
    let s = setup(config());
    let exact = ResponseCache::new(CacheConfig { enabled: true, ..CacheConfig::default() }, None).unwrap();
    let stages = vec![Stage::Cache(Arc::new(exact)), Stage::SemanticCache(s.cache.clone())];
    let pipeline = Pipeline::new(stages, s.upstream.clone());
    let first = pipeline.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&first, CACHE_HEADER), Some("miss"));
    tokio::time::sleep(Duration::from_millis(20)).await; // the exact cache stores in the background
    let repeat = pipeline.call(call("r2", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&repeat, CACHE_HEADER), Some("hit"));
    assert_eq!(s.words.calls.load(Ordering::SeqCst), 1, "the repeat was not embedded");
    for id in ["r3", "r4"] {
        let paraphrase = pipeline.call(call(id, "t", question(PARAPHRASE))).await.unwrap();
        assert_eq!(header(&paraphrase, CACHE_HEADER), Some(SEMANTIC_HIT), "{id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.upstream.calls.load(Ordering::SeqCst), 1);
    assert_eq!(pipeline.stages(crate::Endpoint::Completions), vec![crate::StageName::Cache]);
}

/// Fails every call.
struct Broken;

impl Embedder for Broken {
    fn embed(&self, _: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        Box::pin(async { Err(GatewayError::Internal(anyhow::anyhow!("model gone"))) })
    }
}

#[tokio::test]
async fn a_failing_embedder_is_a_miss() {
    let upstream = Arc::new(Numbered { calls: AtomicUsize::new(0) });
    let cache = Arc::new(SemanticCache::in_memory(config(), Arc::new(Broken)));
    let stage: Service<Chat> = Arc::new(SemanticStage::<Chat>::new(cache.clone(), upstream.clone()));
    for id in ["r1", "r2"] {
        assert!(stage.call(call(id, "t", question(CAPITAL))).await.is_ok());
    }
    assert_eq!((upstream.calls.load(Ordering::SeqCst), cache.len()), (2, 0));
}

#[tokio::test]
async fn lookups_count_hits_misses_similarity_and_latency() {
    let registry = prometheus::Registry::new();
    let names = Arc::new(crate::names::ModelNames::new(&crate::config::GatewayConfig::default()));
    let metrics = metrics::SemanticMetrics::new(&registry, names).unwrap();
    let words = Arc::new(Words { calls: AtomicUsize::new(0) });
    let cache = Arc::new(SemanticCache::in_memory(config(), words).with_metrics(Some(metrics)));
    let upstream = Arc::new(Numbered { calls: AtomicUsize::new(0) });
    let stage: Service<Chat> = Arc::new(SemanticStage::<Chat>::new(cache, upstream));
    for (id, text) in [("r1", CAPITAL), ("r2", PARAPHRASE), ("r3", "Who wrote Hamlet?")] {
        stage.call(call(id, "t", question(text))).await.unwrap();
    }
    let families = registry.gather();
    let family = |name: &str| families.iter().find(|f| f.name() == name).unwrap();
    let counter = |name: &str| family(name).get_metric().iter().map(|m| m.get_counter().get_value()).sum::<f64>();
    assert_eq!(counter("sconce:semantic_cache_hits_total"), 1.0);
    assert_eq!(counter("sconce:semantic_cache_misses_total"), 2.0);
    let histogram = |name: &str| family(name).get_metric()[0].get_histogram().clone();
    let similarity = histogram("sconce:semantic_cache_similarity");
    assert_eq!(similarity.get_sample_count(), 2, "the first lookup found an empty partition");
    let expected = 6.0 / 42f64.sqrt()
        + (bag("Who wrote Hamlet?").iter().zip(bag(CAPITAL)).map(|(a, b)| f64::from(a * b))).sum::<f64>();
    assert!((similarity.get_sample_sum() - expected).abs() < 1e-3, "{}", similarity.get_sample_sum());
    assert_eq!(histogram("sconce:semantic_cache_lookup_seconds").get_sample_count(), 3);
}

/// Embeds like [`Words`] after a delay.
struct SlowWords {
    delay: std::time::Duration,
}

impl Embedder for SlowWords {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(texts.iter().map(|text| bag(text)).collect())
        })
    }
}

/// [`Numbered`] after a delay (the delay starts when the call is made, as a running generation).
struct Slow {
    delay: std::time::Duration,
    numbered: Numbered,
}

impl<A: Api> Backend<A> for Slow {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let (delay, answer) = (self.delay, Backend::<A>::call(&self.numbered, call));
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            answer.await
        })
    }
}

fn slow_stage(speculate: bool, embed_ms: u64, generate_ms: u64) -> Service<Chat> {
    let words = Arc::new(SlowWords { delay: std::time::Duration::from_millis(embed_ms) });
    let config = SemanticCacheConfig { speculate, ..config() };
    let cache = Arc::new(SemanticCache::in_memory(config, words));
    let upstream = Arc::new(Slow {
        delay: std::time::Duration::from_millis(generate_ms),
        numbered: Numbered { calls: AtomicUsize::new(0) },
    });
    Arc::new(SemanticStage::<Chat>::new(cache, upstream))
}

/// With speculation a miss costs the longer of embedding and generating, not their sum.
#[tokio::test]
async fn a_speculative_miss_embeds_while_it_generates() {
    for (speculate, bound) in [(true, 550u128), (false, 600)] {
        let stage = slow_stage(speculate, 300, 300);
        let started = std::time::Instant::now();
        let outcome = stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
        let elapsed = started.elapsed().as_millis();
        assert_eq!(header(&outcome, CACHE_HEADER), Some("miss"));
        if speculate {
            assert!(elapsed < bound, "speculative miss took {elapsed} ms");
        } else {
            assert!(elapsed >= bound, "sequential miss took only {elapsed} ms");
        }
    }
}

/// A hit answers from the cache at once: the speculative generation is dropped, not awaited.
#[tokio::test]
async fn a_speculative_hit_drops_the_generation() {
    let stage = slow_stage(true, 10, 2_000);
    let first = stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(full(first).choices[0].message.content, "Answer number 1");
    let started = std::time::Instant::now();
    let hit = stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert!(started.elapsed().as_millis() < 1_000, "the hit waited for the generation");
    assert_eq!(header(&hit, CACHE_HEADER), Some(SEMANTIC_HIT));
    assert_eq!(full(hit).choices[0].message.content, "Answer number 1");
}

/// An answer that is ready before the question is embedded still gives way to a hit.
#[tokio::test]
async fn a_generation_that_finishes_first_still_gives_way_to_a_hit() {
    let stage = slow_stage(true, 200, 0);
    let first = stage.call(call("r1", "t", question(CAPITAL))).await.unwrap();
    assert_eq!(header(&first, CACHE_HEADER), Some("miss"));
    let hit = stage.call(call("r2", "t", question(PARAPHRASE))).await.unwrap();
    assert_eq!(header(&hit, CACHE_HEADER), Some(SEMANTIC_HIT));
    assert_eq!(full(hit).choices[0].message.content, "Answer number 1", "the cached answer, not the fresh one");
}
