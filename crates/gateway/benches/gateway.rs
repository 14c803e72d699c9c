//! Guardrail input checks on a 4 KB prompt, cache hits, the semantic cache's search,
//! routing overhead, and resolving and rendering a registry prompt.
//! Run: `cargo bench -p sconce-gateway --bench gateway`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::BoxFuture;
use sconce_gateway::cache::replay::static_reply;
use sconce_gateway::cache::{CacheConfig, CachedStage, ResponseCache};
use sconce_gateway::guard::{Action, Policy, PolicyConfig};
use sconce_gateway::prompts::layer::apply_prompt;
use sconce_gateway::prompts::store::LabelRow;
use sconce_gateway::prompts::{PromptBook, PromptVersion};
use sconce_gateway::route::{DeploymentConfig, GroupConfig, RequestHints, Router, RoutingConfig};
use sconce_gateway::semantic::{Embedder, SemanticCache, SemanticCacheConfig, SemanticStage};
use sconce_gateway::{
    reply_id, Api, ApiRequest, Backend, Call, CallContext, CallResult, Chat, GatewayError, Outcome, Principal, Service,
    Upstream,
};

/// Every input check on, each blocking.
fn all_checks() -> Policy {
    let checks = ["PII", "BLOCKED_PATTERN", "BLOCKED_KEYWORD", "TOXICITY", "PROMPT_INJECTION", "LENGTH"];
    let config = PolicyConfig {
        input: checks.iter().map(|c| (c.to_string(), Action::Block)).collect::<BTreeMap<_, _>>(),
        blocked_patterns: vec![r"(?i)\bproject-\d{4}\b".into(), r"\binternal only\b".into()],
        blocked_keywords: vec!["falcon".into(), "codename".into(), "top secret".into()],
        max_input_chars: 8192,
        ..PolicyConfig::default()
    };
    Policy::new(&config).unwrap()
}

/// A 4 KB prompt of prose and code, with nothing to find.
fn prompt() -> String {
    let para = "Please review the following function and explain what it does. It reads a config \
                file, parses each line as key = value, and returns a map. fn parse(s: &str) -> Map { \
                s.lines().filter_map(|l| l.split_once('=')).collect() } The team wants it faster. ";
    para.repeat(4096 / para.len() + 1)[..4096].to_string()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() * 99 / 100]
}

fn guard_bench(c: &mut Criterion) {
    let policy = all_checks();
    let text = prompt();
    assert!(!policy.check_input(&text).is_blocked());
    c.bench_function("guard/input_all_checks_4k", |b| b.iter(|| policy.check_input(std::hint::black_box(&text))));
    let samples = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(policy.check_input(&text));
            start.elapsed()
        })
        .collect();
    println!("guard/input_all_checks_4k p99 = {:?}", p99(samples));
}

struct Echo;

impl<A: Api> Backend<A> for Echo {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let (id, stream) = (reply_id::<A>(&call.ctx.request_id), call.request.is_stream());
        Box::pin(async move { Ok(Outcome::new(static_reply::<A>(id, "m", "Hello there, friend.", stream))) })
    }
}

fn call(model: &str) -> Call<Chat> {
    let json = serde_json::json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]});
    Call { request: serde_json::from_value(json).unwrap(), ctx: CallContext::new("r", Principal::default()) }
}

fn cache_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cache = ResponseCache::new(CacheConfig { enabled: true, ..CacheConfig::default() }, None).unwrap();
    let backend: Service<Chat> = Arc::new(CachedStage::new(Arc::new(cache), Arc::new(Echo)));
    runtime.block_on(async {
        backend.call(call("m")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
    c.bench_function("cache/hit_in_process", |b| b.iter(|| runtime.block_on(backend.call(call("m"))).unwrap()));
}

/// 384 dimensions (all-MiniLM-L6-v2's) from hashed words: the search's cost without a model's.
struct HashedWords;

impl Embedder for HashedWords {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        let embed = |text: &String| {
            let mut vector = vec![0.0f32; 384];
            for word in text.split_whitespace() {
                let fnv = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
                let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325, fnv);
                vector[(hash % 384) as usize] += 1.0;
            }
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            vector.into_iter().map(|x| x / norm).collect()
        };
        let vectors = texts.iter().map(embed).collect();
        Box::pin(async move { Ok(vectors) })
    }
}

fn question(text: &str, no_store: bool) -> Call<Chat> {
    let json = serde_json::json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]});
    let mut ctx = CallContext::new("r", Principal::default());
    if no_store {
        ctx.hints = RequestHints::default().with_cache_control("no-store");
    }
    Call { request: serde_json::from_value(json).unwrap(), ctx }
}

/// A lookup in a partition of 1,000 entries: a miss (not stored) and a hit.
fn semantic_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = SemanticCacheConfig { enabled: true, ..SemanticCacheConfig::default() };
    let cache = Arc::new(SemanticCache::in_memory(config, Arc::new(HashedWords)));
    let backend: Service<Chat> = Arc::new(SemanticStage::new(cache.clone(), Arc::new(Echo)));
    runtime.block_on(async {
        for i in 0..1000 {
            backend.call(question(&format!("q{i} w{} x{} y{}", i * 7, i * 13, i * 31), false)).await.unwrap();
        }
    });
    assert_eq!(cache.len(), 1000);
    let miss = || runtime.block_on(backend.call(question("an unrelated thing entirely", true))).unwrap();
    c.bench_function("semantic/miss_1000_entries", |b| b.iter(miss));
    let hit = || runtime.block_on(backend.call(question("q5 w35 x65 y155", false))).unwrap();
    c.bench_function("semantic/hit_1000_entries", |b| b.iter(hit));
}

fn route_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deployments = ["a", "b", "c"].map(|n| DeploymentConfig { name: n.into(), ..DeploymentConfig::default() });
    let mut config = RoutingConfig::default();
    config.groups.push(GroupConfig::new("g", deployments.to_vec()));
    let local = |_: &DeploymentConfig| Some(Arc::new(Echo) as Arc<dyn Upstream>);
    let router = Router::new(config, &local, None).unwrap();
    c.bench_function("route/direct_backend", |b| b.iter(|| runtime.block_on(Echo.call(call("g"))).unwrap()));
    c.bench_function("route/router_3_deployments", |b| b.iter(|| runtime.block_on(router.call(call("g"))).unwrap()));
}

/// Two versions of a two-message prompt, `production` split 90/10 between them.
fn prompt_book() -> PromptBook {
    let version = |version: u32| PromptVersion {
        name: "support".into(),
        version,
        messages: serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "You answer questions about {{ product }} for {{ company }}. Be brief."},
            {"role": "user", "content": "My order number is {{ order }}."}
        ]))
        .unwrap(),
        model: None,
        params: serde_json::Map::new(),
        message: String::new(),
        created_at: 0,
    };
    let arm = |version: u32, weight: u32| LabelRow {
        name: "support".into(),
        label: "production".into(),
        version,
        weight,
        updated_at: 0,
    };
    PromptBook::build(&PromptBook::default(), vec![version(1), version(2)], vec![arm(1, 90), arm(2, 10)])
}

fn prompt_bench(c: &mut Criterion) {
    let book = prompt_book();
    let reference = serde_json::from_value(serde_json::json!({"name": "support", "label": "production",
        "variables": {"product": "the K2 kettle", "company": "Acme", "order": 12345}}))
    .unwrap();
    c.bench_function("prompt/resolve_experiment_and_render", |b| {
        b.iter(|| {
            let mut call = call("m");
            apply_prompt(&book, std::hint::black_box(&reference), &mut call.request, &mut call.ctx).unwrap()
        })
    });
    c.bench_function("prompt/build_call_only", |b| b.iter(|| call("m")));
}

criterion_group!(benches, guard_bench, cache_bench, semantic_bench, route_bench, prompt_bench);
criterion_main!(benches);
