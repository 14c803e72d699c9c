//! The gateway end to end over real HTTP, a real SQLite file and (where configured) a
//! real Redis: auth, the ledger, the usage API, rate limits and budgets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{tiny_config, user_messages, MODEL};
use futures_util::StreamExt;
use sconce_gateway::config::{GatewayConfig, Price};
use sconce_server::backend::Backend;
use sconce_server::{gateway, server, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const ADMIN: &str = "sk-admin-test";

struct GatewayServer {
    base: String,
    state: AppState,
    client: reqwest::Client,
}

impl GatewayServer {
    async fn start(gateway_config: GatewayConfig) -> Self {
        let config = tiny_config();
        let state = AppState::new(server::settings(&config));
        gateway::install_with_admin(&state, &gateway_config, Some(ADMIN.into())).await.unwrap();
        state.set_backend(Backend::launch(&config).await.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state.clone(), std::future::pending()));
        Self { base, state, client: reqwest::Client::new() }
    }

    fn request(&self, method: reqwest::Method, path: &str, key: Option<&str>) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

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

    async fn close(&self) {
        self.state.gateway().unwrap().gateway.close().await;
    }
}

fn config_in(dir: &std::path::Path) -> GatewayConfig {
    let mut config = GatewayConfig { enabled: true, data_dir: Some(dir.to_path_buf()), ..GatewayConfig::default() };
    config.prices.insert(MODEL.into(), Price { input: 1.0, cached_input: 0.5, output: 2.0 });
    config
}

fn small_chat(stream: bool) -> Value {
    json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4, "stream": stream,
           "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }, "user": "u1"})
}

#[tokio::test]
async fn keys_are_required_checked_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let server = GatewayServer::start(config_in(dir.path())).await;
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

#[tokio::test]
async fn the_ledger_matches_what_clients_saw() {
    let dir = tempfile::tempdir().unwrap();
    let server = GatewayServer::start(config_in(dir.path())).await;
    let key = server.create_key(json!({"alias": "bob", "team": "ops"})).await;
    let results = futures_util::stream::iter(0..200)
        .map(|i| one_request(&server, &key, i))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let (prompt, completion) = results.iter().fold((0, 0), |(p, c), (dp, dc)| (p + dp, c + dc));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handle = server.state.gateway().unwrap();
    handle.gateway.ledger.flush().await;
    let rows = handle.gateway.store.usage(0, i64::MAX, None).await.unwrap();
    assert_eq!(rows.len(), 200);
    let cancelled: Vec<_> = rows.iter().filter(|row| row.status == 499).collect();
    assert_eq!(cancelled.len(), 50, "every cancelled stream is one row");
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
    assert_eq!(
        (group["prompt_tokens"].as_u64(), group["completion_tokens"].as_u64()),
        (Some(prompt), Some(completion))
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

    let budget =
        server.create_key(json!({"alias": "b", "team": "t", "max_budget": 0.000_001, "budget_period": "day"})).await;
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

/// The Redis URL for tests; in CI its absence is a failure, not a skip.
fn redis_url() -> Option<String> {
    match std::env::var("SCONCE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("CI is set but SCONCE_TEST_REDIS_URL is not"),
        _ => {
            eprintln!("skipping: SCONCE_TEST_REDIS_URL is not set");
            None
        }
    }
}

#[tokio::test]
async fn two_servers_sharing_redis_enforce_one_limit() {
    let Some(redis) = redis_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = GatewayConfig { redis_url: Some(redis), ..config_in(dir.path()) };
    let a = GatewayServer::start(config.clone()).await;
    let b = GatewayServer::start(config).await;
    let key = a.create_key(json!({"alias": "shared", "team": "t", "rpm_limit": 5, "max_budget": 0.000_001})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // b reloads keys from the shared database
    let mut statuses = Vec::new();
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        statuses.push(server.chat(&key, &small_chat(false)).await.status().as_u16());
    }
    // The budget is spent after the first request, on both servers (shared spend).
    assert_eq!(statuses[0], 200);
    assert!(statuses[2..].iter().all(|&status| status == 429), "{statuses:?}");
    let rpm = a.create_key(json!({"alias": "rpm", "team": "t", "rpm_limit": 5})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut ok = 0;
    for i in 0..8 {
        let server = if i % 2 == 0 { &a } else { &b };
        if server.chat(&rpm, &small_chat(false)).await.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "five requests across both servers, not five each");
    a.close().await;
    b.close().await;
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
