//! Walks every route in the router with the gateway on: whatever makes the engine generate
//! must have passed the stage stack, so each generation has its ledger row (booked by the
//! outermost stage, the meter). A route that reaches the engine another way fails here.
#![allow(clippy::unwrap_used)]

mod common;

use common::gateway::{GatewayServer, TestDb, ADMIN};
use common::MODEL;
use sconce_server::app::{routes, RouteKind};
use sconce_server::config::{Config, ModelEntry};
use serde_json::{json, Value};

const EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// Requests the engine or an embedding model finished, from `/metrics`.
async fn engine_finished(server: &GatewayServer) -> f64 {
    let text = server.request(reqwest::Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap();
    let counted = ["sconce:request_success_total", "sconce_embedding_requests_total"];
    let lines = text.lines().filter(|line| counted.iter().any(|name| line.starts_with(name)));
    lines.filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn ledger_rows(server: &GatewayServer) -> usize {
    server.state.gateway().unwrap().ledger_rows().await.unwrap().len()
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern.replace("{*id}", MODEL).replace("{id}", "x").replace("{name}", "x").replace("{label}", "x")
}

/// Bodies that one or another inference endpoint accepts.
fn bodies() -> [Value; 3] {
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let completion = json!({"model": MODEL, "prompt": "hi", "max_tokens": 2});
    let embedding = json!({"model": EMBEDDING_MODEL, "input": ["hi", "there"]});
    [chat, completion, embedding]
}

#[tokio::test]
async fn every_route_that_generates_passes_the_stage_stack() {
    let db = TestDb::sqlite();
    let with_embeddings = |config: &mut Config| config.models = vec![ModelEntry::embedding(EMBEDDING_MODEL)];
    let server = GatewayServer::start_with(db.config(), with_embeddings).await;
    let mut generating_routes = 0;
    for (method, pattern, kind) in routes() {
        let path = concrete(pattern);
        let mut generated = 0.0;
        for body in bodies() {
            let (engine_before, rows_before) = (engine_finished(&server).await, ledger_rows(&server).await);
            let response = server.request(method.clone(), &path, Some(ADMIN)).json(&body).send().await.unwrap();
            let status = response.status();
            let _ = response.bytes().await;
            let engine_delta = engine_finished(&server).await - engine_before;
            let rows_delta = ledger_rows(&server).await - rows_before;
            assert!(
                engine_delta <= rows_delta as f64,
                "{method} {path} ({status}) made the engine generate {engine_delta} times with {rows_delta} ledger rows"
            );
            generated += engine_delta;
        }
        if kind == RouteKind::Inference {
            assert!(generated >= 1.0, "{method} {path} is an inference route but never generated");
            generating_routes += 1;
        } else {
            assert_eq!(generated, 0.0, "{method} {path} is no inference route but generated");
        }
    }
    assert!(generating_routes >= 3, "chat, completions and embeddings at least");
    server.close().await;
}
