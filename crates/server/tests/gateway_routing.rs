//! Part 2 of the gateway over real HTTP with the tiny model: fallback to a real closed
//! port, the breaker, `auto` tiers, the response cache (in-process and Redis) and guardrails.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{tiny_config, MODEL};
use sconce_gateway::cache::{CacheBackendKind, CacheConfig};
use sconce_gateway::config::GatewayConfig;
use sconce_gateway::guard::{Action, GuardrailsConfig, PolicyConfig};
use sconce_gateway::route::breaker::BreakerConfig;
use sconce_gateway::route::{DeploymentConfig, GroupConfig, RoutingConfig};
use sconce_server::backend::Backend;
use sconce_server::{gateway, server, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;

struct Server {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut gateway_config =
            GatewayConfig { enabled: true, data_dir: Some(dir.path().into()), ..GatewayConfig::default() };
        configure(&mut gateway_config);
        let config = tiny_config();
        let state = AppState::new(server::settings(&config));
        gateway::install_with_admin(&state, &gateway_config, None).await.unwrap();
        state.set_backend(Backend::launch(&config).await.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state, std::future::pending()));
        Self { base, client: reqwest::Client::new(), _dir: dir }
    }

    async fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.post(format!("{}/v1/chat/completions", self.base)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn body(model: &str, content: &str) -> Value {
    json!({"model": model, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": content}]})
}

fn local(name: &str) -> DeploymentConfig {
    DeploymentConfig { name: name.into(), model: Some(MODEL.into()), ..DeploymentConfig::default() }
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

fn chat_group(primary_url: &str) -> RoutingConfig {
    let primary = DeploymentConfig { name: "primary".into(), url: Some(primary_url.into()), ..local("primary") };
    RoutingConfig {
        groups: vec![GroupConfig { name: "chat".into(), deployments: vec![primary, local("local")] }],
        breaker: BreakerConfig { failure_threshold: 2, cooldown_secs: 1.0, ..BreakerConfig::default() },
        ..RoutingConfig::default()
    }
}

async fn metric(server: &Server, prefix: &str) -> String {
    let text = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    text.lines().filter(|l| l.starts_with(prefix)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_closed_primary_falls_back_and_its_breaker_opens_then_half_opens() {
    let server = Server::start(|g| g.routing = chat_group(&closed_port_url())).await;
    for _ in 0..4 {
        let response = server.chat(&body("chat", "hello"), &[]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-sconce-deployment"), "local");
        assert_eq!(header(&response, "x-sconce-model"), "chat");
    }
    let states = metric(&server, "sconce:deployment_state").await;
    assert!(states.contains("deployment=\"primary\"} 1"), "{states}");
    let attempts =
        metric(&server, "sconce:deployment_requests_total{deployment=\"primary\",outcome=\"failure\"}").await;
    let failures: f64 = attempts.rsplit(' ').next().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = server.chat(&body("chat", "hello"), &[]).await;
    assert_eq!(response.status(), 200);
    let after = metric(&server, "sconce:deployment_requests_total{deployment=\"primary\",outcome=\"failure\"}").await;
    let probed: f64 = after.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(probed > failures, "a half-open probe went to the primary: {failures} -> {probed}");
    let unknown = server.chat(&body("nope", "hello"), &[]).await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn auto_sends_short_and_reasoning_prompts_to_different_models() {
    let server = Server::start(|g| {
        let mut routing = RoutingConfig::default();
        for name in ["fast-model", "quality-model"] {
            routing.groups.push(GroupConfig { name: name.into(), deployments: vec![local(name)] });
        }
        routing.auto.tiers.insert("fast".into(), "fast-model".into());
        routing.auto.tiers.insert("balanced".into(), "fast-model".into());
        routing.auto.tiers.insert("quality".into(), "quality-model".into());
        // The tiny model's context is short: "long" starts at 60 estimated tokens here.
        routing.auto.rules[1].min_prompt_tokens = Some(60);
        g.routing = routing;
    })
    .await;
    let short = server.chat(&body("auto", "Hi!"), &[]).await;
    assert_eq!(header(&short, "x-sconce-model"), "fast-model");
    let reasoning = server.chat(&body("auto", "Prove that 17 is prime, step by step."), &[]).await;
    assert_eq!(header(&reasoning, "x-sconce-model"), "quality-model");
    let long = server.chat(&body("auto", &"tell me more ".repeat(30)), &[]).await;
    assert_eq!(header(&long, "x-sconce-model"), "quality-model");
    let tiered = server.chat(&body("auto", "Hi!"), &[("x-sconce-tier", "quality")]).await;
    assert_eq!(header(&tiered, "x-sconce-model"), "quality-model");
}

fn cache_on(g: &mut GatewayConfig) {
    g.cache = CacheConfig { enabled: true, ..CacheConfig::default() };
}

#[tokio::test]
async fn a_repeated_deterministic_request_is_a_faster_cache_hit_with_the_same_text_and_usage() {
    let server = Server::start(cache_on).await;
    let request = json!({"model": MODEL, "temperature": 0, "max_tokens": 24, "ignore_eos": true,
        "messages": [{"role": "user", "content": "Tell me a story."}]});
    let started = Instant::now();
    let first = server.chat(&request, &[]).await;
    let miss_time = started.elapsed();
    assert_eq!(header(&first, "x-sconce-cache"), "miss");
    let first: Value = first.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let second = server.chat(&request, &[]).await;
    let hit_time = started.elapsed();
    assert_eq!(header(&second, "x-sconce-cache"), "hit");
    let second: Value = second.json().await.unwrap();
    assert!(hit_time < miss_time, "hit {hit_time:?} vs miss {miss_time:?}");
    assert_eq!(first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"]);
    assert_eq!(first["usage"]["prompt_tokens"], second["usage"]["prompt_tokens"]);
    assert_eq!(first["usage"]["completion_tokens"], second["usage"]["completion_tokens"]);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let hit = server.chat(&streamed, &[]).await;
    assert_eq!(header(&hit, "x-sconce-cache"), "hit");
    let text = hit.text().await.unwrap();
    let chunks: Vec<Value> = common::chunks(&common::sse_data(&text));
    let content = chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(content.count() > 1, "a streamed hit is several chunks: {text}");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], first["usage"]["completion_tokens"]);
    let bypass = server.chat(&request, &[("cache-control", "no-cache")]).await;
    assert_eq!(header(&bypass, "x-sconce-cache"), "miss");
}

#[tokio::test]
async fn guardrails_block_card_input_and_end_a_blocked_stream_with_content_filter() {
    let server = Server::start(|g| {
        let policy = PolicyConfig {
            input: [("CREDIT_CARD".to_string(), Action::Block)].into(),
            output: [("BLOCKED_PATTERN".to_string(), Action::Block)].into(),
            blocked_patterns: vec![r"\S".into()],
            ..PolicyConfig::default()
        };
        g.guardrails = GuardrailsConfig { policies: vec![policy] };
    })
    .await;
    let response = server.chat(&body(MODEL, "my card is 4111 1111 1111 1111"), &[]).await;
    assert_eq!(response.status(), 400);
    assert!(header(&response, "x-sconce-guardrails").contains("input:CREDIT_CARD:block"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "content_policy_violation");
    assert!(error["error"]["message"].as_str().unwrap().contains("CREDIT_CARD"));
    let mut streamed = json!({"model": MODEL, "max_tokens": 16, "ignore_eos": true, "stream": true,
        "messages": [{"role": "user", "content": "hello"}]});
    let response = server.chat(&streamed, &[]).await;
    assert_eq!(response.status(), 200);
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    let last_choice = chunks.iter().rev().find(|c| !c["choices"].as_array().unwrap().is_empty()).unwrap();
    assert_eq!(last_choice["choices"][0]["finish_reason"], "content_filter");
    streamed["stream"] = json!(false);
    let full: Value = server.chat(&streamed, &[]).await.json().await.unwrap();
    assert_eq!(full["choices"][0]["finish_reason"], "content_filter");
}

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
async fn two_servers_share_the_redis_cache() {
    let Some(url) = redis_url() else { return };
    let namespace = format!("sconce:test:{}:", uuid_like());
    let configure = |g: &mut GatewayConfig| {
        g.cache = CacheConfig {
            enabled: true,
            backend: CacheBackendKind::Redis,
            redis_url: Some(url.clone()),
            namespace: namespace.clone(),
            ..CacheConfig::default()
        };
    };
    let (a, b) = (Server::start(configure).await, Server::start(configure).await);
    let request = body(MODEL, "shared cache please");
    let first = a.chat(&request, &[]).await;
    assert_eq!(header(&first, "x-sconce-cache"), "miss");
    let first: Value = first.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = b.chat(&request, &[]).await;
    assert_eq!(header(&second, "x-sconce-cache"), "hit");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["choices"][0]["message"]["content"], second["choices"][0]["message"]["content"]);
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[test]
fn the_example_gateway_config_parses_as_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples/gateway.toml");
    let config = sconce_server::config::Config::load(Some(std::path::Path::new(path))).unwrap();
    let gateway = &config.gateway;
    assert!(gateway.enabled && gateway.cache.enabled);
    let group = &gateway.routing.groups[0];
    assert_eq!(group.deployments.len(), 2);
    assert!(group.deployments[0].url.as_deref().unwrap().starts_with("http://127.0.0.1:"));
    assert!(group.deployments[1].url.is_none());
    let policy = &gateway.guardrails.policies[0];
    assert_eq!(policy.input.get("CREDIT_CARD"), Some(&Action::Block));
    assert_eq!(policy.output.get("EMAIL_ADDRESS"), Some(&Action::Mask));
}
