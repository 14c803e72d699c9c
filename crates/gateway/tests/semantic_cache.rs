//! The semantic cache through `Gateway`: its startup errors, and the shared backend on real
//! Postgres (`SCONCE_TEST_POSTGRES_URL`): a second gateway on the same database serves an
//! entry the first stored within a second (NOTIFY), and a restart loads existing entries.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use sconce_gateway::cache::replay::static_reply;
use sconce_gateway::config::{AuthMode, GatewayConfig};
use sconce_gateway::route::RequestHints;
use sconce_gateway::semantic::{Embedder, SemanticBackendKind, SemanticCacheConfig, SEMANTIC_HIT};
use sconce_gateway::{
    reply_id, Api, Backend, Call, CallContext, CallResult, Chat, Endpoint, Gateway, GatewayError, Outcome, Pipeline,
    Principal, Reply, StageName,
};

/// A stand-in for the embedding model: a hashed bag of lowercase words, unit length.
struct Words;

fn bag(text: &str) -> Vec<f32> {
    let mut vector = vec![0.0f32; 1024];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        let hash = word.to_lowercase().bytes().fold(5381u64, |h, b| h.wrapping_mul(33) ^ u64::from(b));
        vector[(hash % 1024) as usize] += 1.0;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter().map(|x| x / norm).collect()
}

impl Embedder for Words {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, GatewayError>> {
        let vectors = texts.iter().map(|text| bag(text)).collect();
        Box::pin(async move { Ok(vectors) })
    }
}

/// Answers "`name` answer N" (N counts its calls).
struct Named {
    name: &'static str,
    calls: AtomicUsize,
}

impl<A: Api> Backend<A> for Named {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let text = format!("{} answer {}", self.name, self.calls.fetch_add(1, Ordering::SeqCst) + 1);
        let id = reply_id::<A>(&call.ctx.request_id);
        Box::pin(async move { Ok(Outcome::new(static_reply::<A>(id, "m", &text, false))) })
    }
}

fn config(dir: &std::path::Path, database_url: Option<&str>, backend: SemanticBackendKind) -> GatewayConfig {
    let semantic_cache = SemanticCacheConfig { enabled: true, threshold: 0.85, backend, ..Default::default() };
    GatewayConfig {
        enabled: true,
        auth: AuthMode::Off,
        data_dir: Some(dir.to_path_buf()),
        database_url: database_url.map(str::to_string),
        semantic_cache,
        ..GatewayConfig::default()
    }
}

fn ask(team: &str, text: &str, hints: RequestHints) -> Call<Chat> {
    let body = serde_json::json!({"model": "m", "temperature": 0.0, "messages": [{"role": "user", "content": text}]});
    let principal = Principal { team: team.into(), ..Principal::default() };
    let mut ctx = CallContext::new(format!("req-{}", rand_id()), principal);
    ctx.hints = hints;
    Call { request: serde_json::from_value(body).unwrap(), ctx }
}

fn rand_id() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// The cache header and the answer's text.
async fn answer(pipeline: &Pipeline, call: Call<Chat>) -> (String, String) {
    let outcome = pipeline.call(call).await.unwrap();
    let header = outcome.headers.iter().rev().find(|(k, _)| *k == "x-sconce-cache").map(|(_, v)| v.clone());
    let Reply::Full(response) = outcome.reply else { panic!("a full reply") };
    (header.unwrap_or_default(), response.choices[0].message.content.clone())
}

#[tokio::test]
async fn on_without_an_embedder_or_shared_on_sqlite_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::open(config(dir.path(), None, SemanticBackendKind::Memory), None).await.unwrap();
    let upstream = Arc::new(Named { name: "local", calls: AtomicUsize::new(0) });
    let error = gateway.pipeline(upstream.clone()).err().unwrap();
    assert!(error.to_string().contains("semantic_cache"), "{error}");
    gateway.set_embedder(Arc::new(Words)).await.unwrap();
    let pipeline = gateway.pipeline(upstream).unwrap();
    assert!(pipeline.stages(Endpoint::Chat).contains(&StageName::SemanticCache));
    assert!(!pipeline.stages(Endpoint::Completions).contains(&StageName::SemanticCache));
    gateway.close().await;

    let dir = tempfile::tempdir().unwrap();
    let shared_on_sqlite = Gateway::open(config(dir.path(), None, SemanticBackendKind::Postgres), None).await;
    let error = shared_on_sqlite.err().unwrap().to_string();
    assert!(error.contains("postgres") && error.contains("semantic_cache"), "{error}");
}

fn postgres_url() -> Option<String> {
    match std::env::var("SCONCE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("CI is set but SCONCE_TEST_POSTGRES_URL is not"),
        _ => {
            eprintln!("skipping: SCONCE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

async fn replica(url: &str, name: &'static str) -> (tempfile::TempDir, Arc<Gateway>, Pipeline) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::open(config(dir.path(), Some(url), SemanticBackendKind::Postgres), None).await.unwrap();
    gateway.set_embedder(Arc::new(Words)).await.unwrap();
    let pipeline = gateway.pipeline(Arc::new(Named { name, calls: AtomicUsize::new(0) })).unwrap();
    (dir, gateway, pipeline)
}

#[tokio::test]
async fn replicas_share_entries_through_postgres_and_a_restart_loads_them() {
    let Some(url) = postgres_url() else { return };
    let team = format!("team-{}", rand_id()); // this run's own partition
    let (_a_dir, a, first) = replica(&url, "first").await;
    let (_b_dir, b, second) = replica(&url, "second").await;
    let question = "What is the capital of France?";
    assert_eq!(answer(&first, ask(&team, question, RequestHints::default())).await.0, "miss");
    let stored = Instant::now();
    let no_store = RequestHints::default().with_cache_control("no-store");
    let paraphrase = "what is the capital city of France";
    let served = loop {
        let (header, text) = answer(&second, ask(&team, paraphrase, no_store.clone())).await;
        if header == SEMANTIC_HIT || stored.elapsed() > Duration::from_secs(1) {
            break (header, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(served, (SEMANTIC_HIT.to_string(), "first answer 1".to_string()), "after {:?}", stored.elapsed());
    let (header, _) = answer(&second, ask("another-team", paraphrase, no_store)).await;
    assert_eq!(header, "miss", "another team never sees it");
    b.close().await;
    drop((second, b));

    let (_c_dir, c, restarted) = replica(&url, "restarted").await;
    let served = answer(&restarted, ask(&team, paraphrase, RequestHints::default())).await;
    assert_eq!(served, (SEMANTIC_HIT.to_string(), "first answer 1".to_string()), "loaded at start");
    a.close().await;
    c.close().await;
}

#[test]
fn the_example_config_turns_the_semantic_cache_on_in_process() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples/semantic-cache.toml");
    let example: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let gateway: GatewayConfig = example["gateway"].clone().try_into().unwrap();
    let semantic = &gateway.semantic_cache;
    assert!(semantic.enabled && gateway.cache.enabled);
    assert_eq!(semantic.backend, SemanticBackendKind::Memory);
    assert_eq!(semantic.threshold, SemanticCacheConfig::default().threshold);
    semantic.check(&gateway.resolved_database_url()).unwrap();
}
