//! The gateway end to end over real HTTP and a real SQLite file or Postgres database: auth,
//! the ledger, the usage API, rate limits and budgets, for chat and completions alike.
//! Limits shared through Redis by two server processes are in `gateway_processes.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::gateway::{on_sqlite_and_postgres, GatewayServer, TestDb, ADMIN};
use common::{user_messages, MODEL};
use futures_util::StreamExt;
use sconce_gateway::config::{GatewayConfig, Price};
use serde_json::{json, Value};

impl GatewayServer {
    async fn create_key(&self, body: Value) -> String {
        let response =
            self.request(reqwest::Method::POST, "/admin/keys", Some(ADMIN)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["key"].as_str().unwrap().to_string()
    }

    async fn chat(&self, key: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/v1/chat/completions", Some(key)).json(body).send().await.unwrap()
    }

    async fn completion(&self, key: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/v1/completions", Some(key)).json(body).send().await.unwrap()
    }

    async fn get_json(&self, path: &str, key: &str) -> Value {
        self.request(reqwest::Method::GET, path, Some(key)).send().await.unwrap().json().await.unwrap()
    }
}

/// The test price table on top of `config`.
fn priced(mut config: GatewayConfig) -> GatewayConfig {
    config.prices.insert(MODEL.into(), Price { input: 1.0, cached_input: 0.5, output: 2.0 });
    config
}

fn config_in(dir: &std::path::Path) -> GatewayConfig {
    priced(GatewayConfig { enabled: true, data_dir: Some(dir.to_path_buf()), ..GatewayConfig::default() })
}

on_sqlite_and_postgres!(
    keys_are_required_checked_and_revocable,
    the_ledger_matches_what_clients_saw,
    budgets_survive_a_restart
);

fn small_chat(stream: bool) -> Value {
    json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4, "stream": stream,
           "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }, "user": "u1"})
}

async fn keys_are_required_checked_and_revocable(db: TestDb) {
    let server = GatewayServer::start(priced(db.config())).await;
    let missing = server.chat("", &small_chat(false)).await;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(server.chat("sk-nope", &small_chat(false)).await.status(), 401);
    let key = server.create_key(json!({"alias": "alice", "team": "research"})).await;
    let ok = server.chat(&key, &small_chat(false)).await;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-sconce-cost") && ok.headers().contains_key("x-sconce-gateway-overhead-ms"));
    let forbidden = server.request(reqwest::Method::GET, "/admin/keys", Some(&key)).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let listed: Value =
        server.request(reqwest::Method::GET, "/admin/keys", Some(ADMIN)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"][0]["alias"], "alice");
    assert!(listed["data"][0].get("key_hash").is_none() && listed["data"][0].get("hash").is_none());
    let revoke = server.request(reqwest::Method::DELETE, "/admin/keys/alice", Some(ADMIN)).send().await.unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(server.chat(&key, &small_chat(false)).await.status(), 401);
    assert_eq!(server.request(reqwest::Method::GET, "/health", None).send().await.unwrap().status(), 200);
    server.close().await;
    db.remove().await;
}

/// Usage the client saw: (prompt, completion) tokens; zero for a cancelled stream.
async fn one_request(server: &GatewayServer, key: &str, i: usize) -> (u64, u64) {
    match i % 4 {
        0 | 1 => {
            let body: Value = server.chat(key, &small_chat(false)).await.json().await.unwrap();
            (body["usage"]["prompt_tokens"].as_u64().unwrap(), body["usage"]["completion_tokens"].as_u64().unwrap())
        }
        2 => {
            let text = server.chat(key, &small_chat(true)).await.text().await.unwrap();
            let data = common::sse_data(&text);
            let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
            (usage["usage"]["prompt_tokens"].as_u64().unwrap(), usage["usage"]["completion_tokens"].as_u64().unwrap())
        }
        _ => {
            let body = json!({"model": MODEL, "messages": user_messages("go on"), "max_tokens": 400,
                              "ignore_eos": true, "stream": true});
            let response = server.chat(key, &body).await;
            let mut stream = response.bytes_stream();
            let _ = stream.next().await;
            drop(stream);
            (0, 0)
        }
    }
}

async fn the_ledger_matches_what_clients_saw(db: TestDb) {
    let server = GatewayServer::start(priced(db.config())).await;
    let key = server.create_key(json!({"alias": "bob", "team": "ops"})).await;
    let results = futures_util::stream::iter(0..200)
        .map(|i| one_request(&server, &key, i))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (prompt, completion) = results.iter().fold((0, 0), |(p, c), (dp, dc)| (p + dp, c + dc));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handle = server.state.gateway().unwrap();
    let rows = handle.ledger_rows().await.unwrap();
    assert_eq!(rows.len(), 200);
    let cancelled: Vec<_> = rows.iter().filter(|row| row.status == 499).collect();
    assert_eq!(cancelled.len(), 50, "every cancelled stream is one row");
    assert!(
        cancelled.iter().all(|row| row.finish_reason == "cancelled" && row.prompt_tokens > 0 && row.cost > 0.0),
        "a cancelled stream is billed for what ran: {cancelled:?}"
    );
    let done = rows.iter().filter(|row| row.status == 200);
    let sums = done.fold((0, 0), |(p, c), row| (p + row.prompt_tokens, c + row.completion_tokens));
    assert_eq!(sums, (prompt, completion));
    assert!(rows.iter().filter(|row| row.status == 200).all(|row| row.user == "u1" && row.cost > 0.0));
    let usage: Value = server
        .request(reqwest::Method::GET, "/v1/usage?group_by=model", Some(ADMIN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = &usage["data"][0];
    assert_eq!((group["group"].as_str(), group["requests"].as_u64()), (Some(MODEL), Some(200)));
    // What clients saw, plus what the cancelled streams ran.
    let billed = rows.iter().fold((0, 0), |(p, c), row| (p + row.prompt_tokens, c + row.completion_tokens));
    assert_eq!(
        (group["prompt_tokens"].as_u64(), group["completion_tokens"].as_u64()),
        (Some(billed.0), Some(billed.1))
    );
    for field in ["cost", "ttft_p50_s", "ttft_p99_s", "latency_p50_s", "latency_p99_s"] {
        assert!(group[field].as_f64().is_some(), "{field}");
    }
    let own: Value = server
        .request(reqwest::Method::GET, "/v1/usage?group_by=key", Some(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["data"][0]["group"], "bob");
    server.close().await;
    db.remove().await;
}

/// A budget that holds one `small_chat` (its hold: 50 prompt-token bound + 4 × 2 output at the
/// test prices, 58e-6) but not a second after one was spent.
const ONE_CHAT_BUDGET: f64 = 0.000_06;

/// Spend is seeded from the ledger at startup, so a spent budget stays spent.
async fn budgets_survive_a_restart(db: TestDb) {
    let first = GatewayServer::start(priced(db.config())).await;
    let spent = first
        .create_key(json!({"alias": "spent", "team": "t", "max_budget": ONE_CHAT_BUDGET, "budget_period": "day"}))
        .await;
    let fresh = first
        .create_key(json!({"alias": "fresh", "team": "t", "max_budget": ONE_CHAT_BUDGET, "budget_period": "month"}))
        .await;
    assert_eq!(first.chat(&spent, &small_chat(false)).await.status(), 200);
    first.close().await;
    let second = GatewayServer::start(priced(db.config())).await;
    let over = second.chat(&spent, &small_chat(false)).await;
    assert_eq!(over.status(), 429);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    assert_eq!(second.chat(&fresh, &small_chat(false)).await.status(), 200, "an unspent key still passes");
    second.close().await;
    db.remove().await;
}

#[tokio::test]
async fn an_rpm_of_five_lets_five_through_and_a_budget_stops_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = GatewayServer::start(config_in(dir.path())).await;
    let key = server.create_key(json!({"alias": "rl", "team": "t", "rpm_limit": 5})).await;
    for _ in 0..5 {
        let response = server.chat(&key, &small_chat(false)).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-ratelimit-remaining-requests"));
    }
    let sixth = server.chat(&key, &small_chat(false)).await;
    assert_eq!(sixth.status(), 429);
    let retry: u64 = sixth.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry));
    assert_eq!(sixth.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = sixth.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let budget = server
        .create_key(json!({"alias": "b", "team": "t", "max_budget": ONE_CHAT_BUDGET, "budget_period": "day"}))
        .await;
    assert_eq!(server.chat(&budget, &small_chat(false)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = server.chat(&budget, &small_chat(false)).await;
    assert_eq!(over.status(), 429);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded");
    server.close().await;
}

#[tokio::test]
async fn max_tokens_is_capped_by_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = GatewayServer::start(config_in(dir.path())).await;
    let key = server.create_key(json!({"alias": "cap", "team": "t", "max_tokens": 2})).await;
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 50, "ignore_eos": true});
    let body: Value = server.chat(&key, &body).await.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 2);
    server.close().await;
}

#[test]
fn the_teams_example_turns_auth_on_with_prices_and_a_data_dir_ledger() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples/teams.toml");
    let config = sconce_server::config::Config::load(Some(std::path::Path::new(path))).unwrap();
    assert!(config.gateway.enabled);
    assert_eq!(config.gateway.admin_key_env.as_deref(), Some("SCONCE_ADMIN_KEY"));
    assert!(config.gateway.prices.contains_key(&config.model.name));
    assert!(config.gateway.database_url.is_none() && config.gateway.data_dir.is_none());
}

fn small_completion(stream: bool) -> Value {
    json!({"model": MODEL, "prompt": ["Once upon", "a time"], "n": 2, "max_tokens": 4, "stream": stream,
           "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }, "user": "u1"})
}

/// (prompt, completion) tokens of a `usage` object.
fn tokens(usage: &Value) -> (u64, u64) {
    (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap())
}

/// The closing usage chunk of a streamed reply.
async fn streamed_usage(response: reqwest::Response) -> Value {
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    last["usage"].clone()
}

/// The price table of [`config_in`], from the usage a client saw.
fn expected_cost(usage: &Value) -> f64 {
    let cached = usage["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let (prompt, completion) = tokens(usage);
    ((prompt - cached) as f64 + cached as f64 * 0.5 + completion as f64 * 2.0) / 1e6
}

/// The value of one Prometheus series in `/metrics`.
fn series(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|line| line.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn completions_are_metered_like_chat() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    let key = server.create_key(json!({"alias": "writer", "team": "t"})).await;
    let full = server.completion(&key, &small_completion(false)).await;
    assert_eq!(full.status(), 200);
    assert!(full.headers().contains_key("x-sconce-gateway-overhead-ms"));
    let cost_header: f64 = full.headers()["x-sconce-cost"].to_str().unwrap().parse().unwrap();
    let body: Value = full.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 4, "two prompts, n = 2");
    assert!((body["usage"]["cost"].as_f64().unwrap() - cost_header).abs() < 1e-8);
    let streamed = streamed_usage(server.completion(&key, &small_completion(true)).await).await;
    let seen = [tokens(&body["usage"]), tokens(&streamed)];
    let cancelled = json!({"model": MODEL, "prompt": "go on", "max_tokens": 400, "ignore_eos": true, "stream": true});
    let mut stream = server.completion(&key, &cancelled).await.bytes_stream();
    let _ = stream.next().await;
    drop(stream);

    let rows = server.rows(3).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|row| row.operation == "text_completion" && row.key_alias == "writer"));
    assert_eq!(rows.iter().filter(|row| row.status == 499).count(), 1, "a cancelled stream is one row");
    let done: Vec<_> = rows.iter().filter(|row| row.status == 200).collect();
    assert!(done.iter().all(|row| row.user == "u1" && row.cost > 0.0 && !row.finish_reason.is_empty()), "{done:?}");
    let (prompt, completion) = seen.iter().fold((0, 0), |(p, c), (dp, dc)| (p + dp, c + dc));
    let sums = done.iter().fold((0, 0), |(p, c), row| (p + row.prompt_tokens, c + row.completion_tokens));
    assert_eq!(sums, (prompt, completion));
    let usage = server.get_json("/v1/usage?group_by=operation", ADMIN).await;
    let group = &usage["data"][0];
    assert_eq!((group["group"].as_str(), group["requests"].as_u64()), (Some("text_completion"), Some(3)));
    // What clients saw, plus what the cancelled stream ran.
    let billed = rows.iter().fold((0, 0), |(p, c), row| (p + row.prompt_tokens, c + row.completion_tokens));
    assert_eq!(tokens(group), billed);
    let metrics = server.request(reqwest::Method::GET, "/metrics", None).send().await.unwrap().text().await.unwrap();
    assert_eq!(series(&metrics, "sconce_gateway_tokens_total{type=\"completion\"}"), billed.1 as f64);
    server.close().await;
}

#[tokio::test]
async fn an_rpm_limit_counts_chat_and_completions_together() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    let key = server.create_key(json!({"alias": "rl", "team": "t", "rpm_limit": 4})).await;
    for i in 0..4 {
        let response = match i % 2 {
            0 => server.chat(&key, &small_chat(false)).await,
            _ => server.completion(&key, &small_completion(false)).await,
        };
        assert_eq!(response.status(), 200, "request {i}");
        assert!(response.headers().contains_key("x-ratelimit-remaining-requests"));
    }
    let refused = server.completion(&key, &small_completion(false)).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(refused.headers()["x-ratelimit-remaining-requests"], "0");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(server.chat(&key, &small_chat(false)).await.status(), 429);
    let rows = server.rows(6).await;
    let refusals: Vec<_> = rows.iter().filter(|row| row.status == 429).map(|row| row.operation.as_str()).collect();
    assert_eq!(refusals.len(), 2);
    assert!(refusals.contains(&"chat") && refusals.contains(&"text_completion"));
    server.close().await;
}

#[tokio::test]
async fn completions_enforce_keys_models_ceilings_and_budgets() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    let body = json!({"model": MODEL, "prompt": "hi", "max_tokens": 50, "ignore_eos": true});
    assert_eq!(server.completion("sk-nope", &body).await.status(), 401);
    let other = server.create_key(json!({"alias": "other", "team": "t", "models": ["someone-else"]})).await;
    let forbidden = server.completion(&other, &body).await;
    assert_eq!(forbidden.status(), 403);
    let error: Value = forbidden.json().await.unwrap();
    common::assert_envelope(&error);
    assert_eq!(
        (error["error"]["type"].as_str(), error["error"]["code"].as_str()),
        (Some("permission_error"), Some("insufficient_permissions"))
    );
    let capped = server.create_key(json!({"alias": "cap", "team": "t", "max_tokens": 2})).await;
    let reply: Value = server.completion(&capped, &body).await.json().await.unwrap();
    assert_eq!(reply["usage"]["completion_tokens"], 2);
    let empty = server.completion(&capped, &json!({"model": MODEL, "prompt": []})).await;
    assert_eq!(empty.status(), 400);
    // Holds one request (4-token bound + 50 × 2 output: 104e-6), not a second after one ran.
    let budget =
        server.create_key(json!({"alias": "b", "team": "t", "max_budget": 0.000_15, "budget_period": "day"})).await;
    assert_eq!(server.completion(&budget, &body).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let over = server.completion(&budget, &body).await;
    assert_eq!(over.status(), 429);
    let error: Value = over.json().await.unwrap();
    assert_eq!(error["error"]["code"], "budget_exceeded");
    let statuses: Vec<u16> = server.rows(5).await.iter().map(|row| row.status).collect();
    assert_eq!(statuses.iter().filter(|&&status| status == 403 || status == 400).count(), 2, "{statuses:?}");
    server.close().await;
}

#[tokio::test]
async fn streamed_usage_carries_the_cost_for_chat_and_completions() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    let key = server.create_key(json!({"alias": "s", "team": "t", "rpm_limit": 100})).await;
    let mut costs = Vec::new();
    for (path, body) in [("/v1/chat/completions", small_chat(true)), ("/v1/completions", small_completion(true))] {
        let response = server.request(reqwest::Method::POST, path, Some(&key)).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        for header in ["x-sconce-gateway-overhead-ms", "x-ratelimit-remaining-requests"] {
            assert!(response.headers().contains_key(header), "{path}: {header}");
        }
        let usage = streamed_usage(response).await;
        let cost = usage["cost"].as_f64().unwrap_or_else(|| panic!("{path}: no usage.cost in {usage}"));
        assert!(cost > 0.0 && (cost - expected_cost(&usage)).abs() < 1e-12, "{path}: {cost} for {usage}");
        costs.push(cost);
    }
    let rows = server.rows(2).await;
    let ledger_cost = |operation: &str| rows.iter().find(|row| row.operation == operation).unwrap().cost;
    assert_eq!([ledger_cost("chat"), ledger_cost("text_completion")], [costs[0], costs[1]]);
    let hidden = json!({"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": true});
    let response = server.completion(&key, &hidden).await;
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none_or(Value::is_null)), "usage not asked for");
    server.close().await;
}
