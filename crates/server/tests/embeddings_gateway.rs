//! `/v1/embeddings` through the gateway's stages: keys, budgets and the ledger apply, priced
//! at the embedding model's input price.
#![allow(clippy::unwrap_used)]

mod common;

use common::gateway::{GatewayServer, TestDb, ADMIN};
use sconce_gateway::config::{GatewayConfig, Price};
use sconce_gateway::guard::{Action, GuardrailsConfig, PolicyConfig};
use sconce_server::config::{Config, ModelEntry};
use serde_json::{json, Value};

const MINILM: &str = "all-minilm-l6-v2";
/// Per million input tokens.
const INPUT_PRICE: f64 = 20.0;

fn priced(mut config: GatewayConfig) -> GatewayConfig {
    config.prices.insert(MINILM.into(), Price { input: INPUT_PRICE, cached_input: INPUT_PRICE, output: 0.0 });
    config
}

async fn start(db: &TestDb) -> GatewayServer {
    let with_minilm = |config: &mut Config| config.models = vec![ModelEntry::embedding(MINILM)];
    GatewayServer::start_with(priced(db.config()), with_minilm).await
}

async fn create_key(server: &GatewayServer, body: Value) -> String {
    let response = server.request(reqwest::Method::POST, "/admin/keys", Some(ADMIN)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_string()
}

async fn embed(server: &GatewayServer, key: Option<&str>, body: &Value) -> (u16, Value) {
    let response = server.request(reqwest::Method::POST, "/v1/embeddings", key).json(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn keys_budgets_and_the_ledger_apply_to_embeddings() {
    let db = TestDb::sqlite();
    let server = start(&db).await;
    let body = json!({"model": MINILM, "input": ["the first text", "and a second one"], "user": "u-7"});
    let (status, reply) = embed(&server, None, &body).await;
    assert_eq!(status, 401, "no key: {reply}");

    let broke = create_key(&server, json!({"alias": "broke", "team": "t", "max_budget": 0.0})).await;
    let (status, reply) = embed(&server, Some(&broke), &body).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (429, Some("budget_exceeded")), "{reply}");

    let paying = create_key(&server, json!({"alias": "paying", "team": "t", "max_budget": 1.0})).await;
    let (status, reply) = embed(&server, Some(&paying), &body).await;
    assert_eq!(status, 200, "{reply}");
    let tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(tokens, 5 + 6, "[CLS] the first text [SEP], [CLS] and a second one [SEP]");

    let rows = server.rows(2).await;
    let row = rows.iter().find(|row| row.key_alias == "paying").unwrap();
    assert_eq!((row.operation.as_str(), row.model.as_str(), row.status), ("embeddings", MINILM, 200));
    assert_eq!((row.prompt_tokens, row.completion_tokens, row.user.as_str()), (tokens, 0, "u-7"));
    let cost = tokens as f64 * INPUT_PRICE / 1e6;
    assert!((row.cost - cost).abs() < 1e-12, "cost {} vs {cost}", row.cost);
    let refused = rows.iter().find(|row| row.key_alias == "broke").unwrap();
    assert_eq!((refused.operation.as_str(), refused.status), ("embeddings", 429));
    server.close().await;
}

/// Input guardrails check the inputs; an output guardrail that blocks any text finds none in
/// an embeddings reply, so the vectors pass.
#[tokio::test]
async fn input_guardrails_apply_and_output_guardrails_find_no_text() {
    let db = TestDb::sqlite();
    let mut config = priced(db.config());
    let policy = PolicyConfig {
        input: [("CREDIT_CARD".to_string(), Action::Block)].into(),
        output: [("BLOCKED_PATTERN".to_string(), Action::Block)].into(),
        blocked_patterns: vec![r"\S".into()],
        ..PolicyConfig::default()
    };
    config.guardrails = GuardrailsConfig { policies: vec![policy] };
    let with_minilm = |config: &mut Config| config.models = vec![ModelEntry::embedding(MINILM)];
    let server = GatewayServer::start_with(config, with_minilm).await;
    let card = json!({"model": MINILM, "input": ["fine", "my card is 4111 1111 1111 1111"]});
    let (status, reply) = embed(&server, Some(ADMIN), &card).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (400, Some("content_policy_violation")), "{reply}");
    assert_eq!(reply["error"]["param"], "input");
    let (status, reply) = embed(&server, Some(ADMIN), &json!({"model": MINILM, "input": "fine"})).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"][0]["embedding"].as_array().unwrap().len(), 384);
    server.close().await;
}
