//! Walks every route in the router with the gateway on: whatever makes the engine generate
//! must have passed the stage stack, so each generation has its ledger row (booked by the
//! outermost stage, the meter). A route that reaches the engine another way fails here.
#![allow(clippy::unwrap_used)]

mod common;

use common::gateway::{GatewayServer, TestDb, ADMIN};
use common::MODEL;
use sconce_server::app::{routes, RouteKind};
use serde_json::{json, Value};

/// Requests the engine finished, from `/metrics`.
async fn engine_finished(server: &GatewayServer) -> f64 {
    let text = server.request(reqwest::Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap();
    let lines = text.lines().filter(|line| line.starts_with("sconce:request_success_total"));
    lines.filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn ledger_rows(server: &GatewayServer) -> usize {
    server.state.gateway().unwrap().ledger_rows().await.unwrap().len()
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern.replace("{*id}", MODEL).replace("{id}", "x").replace("{name}", "x").replace("{label}", "x")
}

/// Bodies that one or the other generating endpoint accepts.
fn bodies() -> [Value; 2] {
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let completion = json!({"model": MODEL, "prompt": "hi", "max_tokens": 2});
    [chat, completion]
}

#[tokio::test]
async fn every_route_that_generates_passes_the_stage_stack() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(db.config()).await;
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
    assert!(generating_routes >= 2, "chat and completions at least");
    server.close().await;
}
