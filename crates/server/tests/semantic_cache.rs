//! The semantic cache over real HTTP, with all-MiniLM-L6-v2 served beside the chat model: a
//! paraphrase is a hit (its similarity the cosine of the model's own vectors), an unrelated
//! question and another team's are misses, a stream replays, and two servers sharing Postgres
//! share their entries.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::gateway::{GatewayServer, TestDb, ADMIN};
use common::user_messages;
use sconce_gateway::semantic::SemanticBackendKind;
use sconce_server::config::{Config, ModelEntry};
use serde_json::{json, Value};

const MINILM: &str = "all-minilm-l6-v2";
const THRESHOLD: f32 = 0.8;
const QUESTION: &str = "What is the capital of France?";
const PARAPHRASE: &str = "What's the capital city of France?";
const UNRELATED: &str = "How long should I bake sourdough bread?";

async fn start(db: &TestDb, backend: SemanticBackendKind) -> GatewayServer {
    let mut gateway = db.config();
    gateway.semantic_cache.enabled = true;
    gateway.semantic_cache.threshold = THRESHOLD;
    gateway.semantic_cache.backend = backend;
    let with_minilm = |config: &mut Config| config.models = vec![ModelEntry::embedding(MINILM)];
    GatewayServer::start_with(gateway, with_minilm).await
}

async fn create_key(server: &GatewayServer, team: &str) -> String {
    let body = json!({"alias": format!("{team}-key"), "team": team});
    let response = server.request(reqwest::Method::POST, "/admin/keys", Some(ADMIN)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string()
}

struct Answer {
    cache: String,
    similarity: Option<f32>,
    content: String,
    id: String,
}

async fn ask(server: &GatewayServer, key: &str, question: &str, stream: bool) -> Answer {
    ask_at(&server.base, key, question, stream, "").await
}

/// Asks the server at `base`; `cache_control` e.g. `no-store`: a miss is not stored.
async fn ask_at(base: &str, key: &str, question: &str, stream: bool, cache_control: &str) -> Answer {
    let body = json!({"messages": user_messages(question), "max_tokens": 12, "temperature": 0, "stream": stream});
    let request = reqwest::Client::new().post(format!("{base}/v1/chat/completions")).bearer_auth(key);
    let mut request = request.json(&body);
    if !cache_control.is_empty() {
        request = request.header("cache-control", cache_control);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |name: &str| response.headers().get(name).map(|value| value.to_str().unwrap().to_string());
    let (cache, similarity) = (header("x-sconce-cache").unwrap_or_default(), header("x-sconce-cache-similarity"));
    let text = response.text().await.unwrap();
    let (content, id) = if stream { streamed(&text) } else { whole(&text) };
    Answer { cache, similarity: similarity.map(|value| value.parse().unwrap()), content, id }
}

fn whole(text: &str) -> (String, String) {
    let reply: Value = serde_json::from_str(text).unwrap();
    (reply["choices"][0]["message"]["content"].as_str().unwrap().to_string(), reply["id"].as_str().unwrap().into())
}

fn streamed(text: &str) -> (String, String) {
    let chunks = common::chunks(&common::sse_data(text));
    let content = chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    (content, chunks[0]["id"].as_str().unwrap().to_string())
}

/// The cosine of the model's vectors for `a` and `b`, through `/v1/embeddings`.
async fn cosine(server: &GatewayServer, a: &str, b: &str) -> f32 {
    let body = json!({"model": MINILM, "input": [a, b]});
    let request = server.request(reqwest::Method::POST, "/v1/embeddings", Some(ADMIN)).json(&body);
    let reply: Value = request.send().await.unwrap().json().await.unwrap();
    let vector = |i: usize| -> Vec<f32> {
        reply["data"][i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let (a, b) = (vector(0), vector(1));
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(&a) * norm(&b))
}

#[tokio::test]
async fn a_paraphrase_is_a_hit_and_unrelated_questions_and_other_teams_miss() {
    let db = TestDb::sqlite();
    let server = start(&db, SemanticBackendKind::Memory).await;
    let (alpha, beta) = (create_key(&server, "alpha").await, create_key(&server, "beta").await);
    let first = ask(&server, &alpha, QUESTION, false).await;
    assert_eq!(first.cache, "miss");

    let hit = ask(&server, &alpha, PARAPHRASE, false).await;
    assert_eq!(hit.cache, "semantic-hit");
    assert_eq!(hit.content, first.content, "the cached answer");
    assert_ne!(hit.id, first.id, "a hit answers with its own request id");
    let expected = cosine(&server, QUESTION, PARAPHRASE).await;
    let similarity = hit.similarity.unwrap();
    assert!((similarity - expected).abs() < 1e-3, "similarity {similarity}, the model's cosine {expected}");
    assert!(similarity >= THRESHOLD);

    let unrelated = ask(&server, &alpha, UNRELATED, false).await;
    assert_eq!((unrelated.cache.as_str(), unrelated.similarity), ("miss", None));
    assert!(cosine(&server, QUESTION, UNRELATED).await < THRESHOLD);
    let other_team = ask(&server, &beta, PARAPHRASE, false).await;
    assert_eq!(other_team.cache, "miss", "another team never sees alpha's answers");

    let streamed = ask(&server, &alpha, "what is the capital of france", true).await;
    assert_eq!((streamed.cache.as_str(), streamed.content.as_str()), ("semantic-hit", first.content.as_str()));
    server.close().await;
}

/// Read by the second server process as its admin key (`admin_key_env`).
const ADMIN_ENV: &str = "SCONCE_TEST_SEMANTIC_ADMIN_KEY";

/// `sconce serve` in its own process over the same Postgres database, semantic cache shared.
fn second_process(db: &TestDb) -> common::ServeProcess {
    let url = db.config().database_url.unwrap();
    let toml = format!(
        "[gateway]\nenabled = true\nadmin_key_env = {ADMIN_ENV:?}\ndata_dir = {:?}\ndatabase_url = {url:?}\n\
         [gateway.semantic_cache]\nenabled = true\nthreshold = {THRESHOLD}\nbackend = \"postgres\"\n\
         [[models]]\nname = {MINILM:?}\nkind = \"embedding\"\n",
        db.dir.path().to_str().unwrap()
    );
    let config = db.dir.path().join("second.toml");
    std::fs::write(&config, toml).unwrap();
    std::env::set_var(ADMIN_ENV, ADMIN);
    common::spawn_serve(common::MODEL, &config, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_process_sharing_postgres_serves_the_first_ones_entry() {
    let Some(db) = TestDb::postgres().await else { return };
    let first = start(&db, SemanticBackendKind::Postgres).await;
    let second = second_process(&db);
    common::wait_ready(&first.client, &second.base).await;
    let asked = ask(&first, ADMIN, QUESTION, false).await;
    assert_eq!(asked.cache, "miss");
    let stored = Instant::now();
    loop {
        // no-store: the second server's own misses must not become the hit.
        let answer = ask_at(&second.base, ADMIN, PARAPHRASE, false, "no-store").await;
        if answer.cache == "semantic-hit" {
            assert_eq!(answer.content, asked.content);
            break;
        }
        assert!(stored.elapsed() < Duration::from_secs(1), "the second server has no hit after 1 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    first.close().await;
    db.remove().await;
}
