//! Tool calls and constraints through the gateway over real HTTP: a remote upstream (another
//! Sconce) gets `tools` and `response_format` and its calls come back intact, streamed and
//! not; output guardrails mask or block card numbers in call arguments; the ledger counts calls.
#![allow(clippy::unwrap_used)]

mod common;

use common::gateway::{GatewayServer, TestDb};
use common::{chunks, sse_data, TestServer, MODEL};
use sconce_gateway::config::{AuthMode, GatewayConfig};
use sconce_gateway::guard::{Action, GuardrailsConfig, PolicyConfig};
use sconce_gateway::route::{DeploymentConfig, GroupConfig, RoutingConfig};
use serde_json::{json, Value};

const CARD: &str = "4111 1111 1111 1111";

fn open(db: &TestDb) -> GatewayConfig {
    GatewayConfig { auth: AuthMode::Off, ..db.config() }
}

/// A call whose arguments the grammar fixes to a card number (the random model has no say).
fn card_call(model: &str, stream: bool) -> Value {
    let parameters = json!({"type": "object", "properties": {"card": {"const": CARD}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["card", "n"], "additionalProperties": false});
    json!({"model": model, "messages": [{"role": "user", "content": "pay"}], "max_tokens": 135, "seed": 5, "temperature": 1.0,
        "stream": stream, "tool_choice": "required", "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "pay", "parameters": parameters}}]})
}

async fn post(base: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{base}/v1/chat/completions")).json(body).send().await.unwrap()
}

/// (name, arguments) of each call, from a full reply or a stream's deltas; and the finish reason.
async fn calls_of(response: reqwest::Response, stream: bool) -> (Vec<(String, String)>, String) {
    if response.status() != 200 {
        panic!("{}: {}", response.status(), response.text().await.unwrap());
    }
    if !stream {
        let reply: Value = response.json().await.unwrap();
        let choice = &reply["choices"][0];
        let calls = choice["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
        let pairs = calls.iter().map(|c| {
            (c["function"]["name"].as_str().unwrap().into(), c["function"]["arguments"].as_str().unwrap().into())
        });
        return (pairs.collect(), choice["finish_reason"].as_str().unwrap().into());
    }
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = String::new();
    for chunk in chunks(&sse_data(&response.text().await.unwrap())) {
        let Some(choice) = chunk["choices"].get(0) else { continue };
        finish = choice["finish_reason"].as_str().map(String::from).unwrap_or(finish);
        for delta in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = delta["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                calls.push((delta["function"]["name"].as_str().unwrap().into(), String::new()));
            }
            calls[index].1.push_str(delta["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    (calls, finish)
}

#[tokio::test]
async fn a_remote_upstreams_calls_and_constraints_pass_through_intact() {
    let upstream = TestServer::start().await;
    let db = TestDb::sqlite();
    let remote = DeploymentConfig {
        name: "far".into(),
        url: Some(format!("{}/v1", upstream.base)),
        model: Some(MODEL.into()),
        ..DeploymentConfig::default()
    };
    let config = GatewayConfig {
        routing: RoutingConfig {
            groups: vec![GroupConfig::new("far-model", vec![remote])],
            ..RoutingConfig::default()
        },
        ..open(&db)
    };
    let gateway = GatewayServer::start(config).await;
    for stream in [false, true] {
        let direct = calls_of(post(&upstream.base, &card_call(MODEL, stream)).await, stream).await;
        let through = calls_of(post(&gateway.base, &card_call("far-model", stream)).await, stream).await;
        assert_eq!(direct.1, "tool_calls");
        assert_eq!(through, direct, "stream: {stream}");
        let arguments: Value = serde_json::from_str(&through.0[0].1).unwrap();
        assert_eq!(arguments["card"], CARD, "no guardrail here: the arguments are as written");
    }
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5}}, "required": ["n"], "additionalProperties": false});
    let body = json!({"model": "far-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": 20, "temperature": 1.0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}});
    let reply: Value = post(&gateway.base, &body).await.json().await.unwrap();
    let value: Value = serde_json::from_str(reply["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(value["n"].as_u64().unwrap() <= 5, "the upstream got response_format: {value}");
}

async fn guarded(db: &TestDb, action: Action) -> GatewayServer {
    let policy = PolicyConfig { output: [("CREDIT_CARD".to_string(), action)].into(), ..PolicyConfig::default() };
    GatewayServer::start(GatewayConfig { guardrails: GuardrailsConfig { policies: vec![policy] }, ..open(db) }).await
}

#[tokio::test]
async fn guardrails_mask_card_numbers_in_call_arguments_and_the_ledger_counts_calls() {
    let db = TestDb::sqlite();
    let server = guarded(&db, Action::Mask).await;
    for stream in [false, true] {
        let (calls, finish) = calls_of(post(&server.base, &card_call(MODEL, stream)).await, stream).await;
        assert_eq!(finish, "tool_calls");
        let arguments = &calls[0].1;
        assert!(!arguments.contains(CARD) && !arguments.contains("4111"), "stream {stream}: {arguments}");
        let value: Value =
            serde_json::from_str(arguments).unwrap_or_else(|e| panic!("masked arguments stay JSON: {arguments}: {e}"));
        assert!(value["card"].is_string(), "{value}");
    }
    let rows = server.rows(2).await;
    assert!(rows.iter().all(|row| row.tool_calls == 1), "{rows:?}");
}

#[tokio::test]
async fn a_blocked_card_in_arguments_ends_the_choice_with_content_filter() {
    let db = TestDb::sqlite();
    let server = guarded(&db, Action::Block).await;
    for stream in [false, true] {
        let (calls, finish) = calls_of(post(&server.base, &card_call(MODEL, stream)).await, stream).await;
        assert_eq!(finish, "content_filter", "stream {stream}");
        let leaked = calls.iter().any(|(_, arguments)| arguments.contains("4111"));
        assert!(!leaked, "stream {stream}: {calls:?}");
    }
}
