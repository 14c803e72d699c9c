//! Part 2 of the gateway over real HTTP with the tiny model: fallback to a real closed
//! port, the breaker, `auto` tiers, KV-aware balancing, `/v1/models`, the response cache
//! (in-process, and Redis shared by two server processes) and guardrails.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{tiny_config, MODEL};
use sconce_gateway::cache::CacheConfig;
use sconce_gateway::config::{AuthMode, GatewayConfig};
use sconce_gateway::guard::{Action, GuardrailsConfig, PolicyConfig};
use sconce_gateway::route::breaker::BreakerConfig;
use sconce_gateway::route::{DeploymentConfig, GroupConfig, RoutingConfig};
use sconce_gateway::{Api, Chat};
use sconce_server::backend::Backend;
use sconce_server::{gateway, server, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// With auth off every caller is anonymous; reads of `/v1/usage` still need the admin key.
const ADMIN: &str = "sk-admin-routing";

struct Server {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut gateway_config = GatewayConfig {
            enabled: true,
            auth: AuthMode::Off,
            data_dir: Some(dir.path().into()),
            ..GatewayConfig::default()
        };
        configure(&mut gateway_config);
        let config = tiny_config();
        let state = AppState::new(server::settings(&config));
        gateway::install_with_admin(&state, &gateway_config, Some(ADMIN.into())).await.unwrap();
        state.set_backend(Backend::launch(&config).await.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state, std::future::pending()));
        Self { base, client: reqwest::Client::new(), _dir: dir }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(ADMIN).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
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
        groups: vec![GroupConfig::new("chat", vec![primary, local("local")])],
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
            routing.groups.push(GroupConfig::new(name, vec![local(name)]));
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

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Waits (at most 5 s) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A gateway config file with the response cache in Redis under a fresh namespace.
fn redis_cache_config(dir: &std::path::Path, url: &str) -> (std::path::PathBuf, String) {
    let namespace = format!("sconce:test:{}:{}:", std::process::id(), unique());
    let toml = format!(
        "[gateway]\nenabled = true\nauth = \"off\"\ndata_dir = {}\n\n[gateway.cache]\nenabled = true\nbackend = \"redis\"\n\
         redis_url = {}\nnamespace = {}\nttl_secs = 120\n",
        json!(dir),
        json!(url),
        json!(namespace)
    );
    let path = dir.join("sconce.toml");
    std::fs::write(&path, toml).unwrap();
    (path, namespace)
}

/// Waits until the entry for `request` is in Redis, so B cannot have filled it itself.
async fn wait_for_redis_entry(url: &str, namespace: &str, request: &Value) {
    use sconce_gateway::cache::store::{CacheStore, RedisStore};
    let parsed: sconce_protocol::chat::ChatCompletionRequest = serde_json::from_value(request.clone()).unwrap();
    let key = format!("{namespace}{}", sconce_gateway::cache::key::cache_key::<Chat>(&parsed, MODEL, None));
    let store = RedisStore::new(url, Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.get(key.clone()).await.is_none() {
        assert!(Instant::now() < deadline, "process A never wrote {key}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_chat(client: &reqwest::Client, base: &str, body: &Value) -> reqwest::Response {
    client.post(format!("{base}/v1/chat/completions")).json(body).send().await.unwrap()
}

fn content_of(chunks: &[Value]) -> Vec<String> {
    let texts = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str());
    texts.filter(|t| !t.is_empty()).map(String::from).collect()
}

#[tokio::test]
async fn two_server_processes_share_the_redis_cache() {
    let Some(url) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (config, namespace) = redis_cache_config(dir.path(), &url);
    let client = reqwest::Client::new();
    let a = common::spawn_serve(MODEL, &config, &[]);
    common::wait_ready(&client, &a.base).await;
    let b = common::spawn_serve(MODEL, &config, &[]);
    common::wait_ready(&client, &b.base).await;
    assert_ne!(a.child.id(), b.child.id());
    let request = json!({"model": MODEL, "temperature": 0, "max_tokens": 16, "ignore_eos": true,
        "messages": [{"role": "user", "content": format!("shared across processes {}", unique())}]});

    let first = post_chat(&client, &a.base, &request).await;
    assert_eq!((first.status().as_u16(), header(&first, "x-sconce-cache")), (200, "miss".into()));
    let first: Value = first.json().await.unwrap();
    wait_for_redis_entry(&url, &namespace, &request).await;
    let second = post_chat(&client, &b.base, &request).await;
    assert_eq!(header(&second, "x-sconce-cache"), "hit");
    let second: Value = second.json().await.unwrap();
    let text = first["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(second["choices"][0]["message"]["content"], text.as_str());
    for field in ["prompt_tokens", "completion_tokens"] {
        assert_eq!(second["usage"][field], first["usage"][field], "{field}");
    }
    assert_eq!(second["usage"]["prompt_tokens_details"]["cached_tokens"], first["usage"]["prompt_tokens"]);

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let hit = post_chat(&client, &b.base, &streamed).await;
    assert_eq!(header(&hit, "x-sconce-cache"), "hit");
    let chunks = common::chunks(&common::sse_data(&hit.text().await.unwrap()));
    let pieces = content_of(&chunks);
    assert!(pieces.len() > 1, "a streamed hit is several chunks: {pieces:?}");
    assert_eq!(pieces.concat(), text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], first["usage"]["completion_tokens"]);
    assert_eq!(usage["prompt_tokens"], first["usage"]["prompt_tokens"]);
    let hits = client.get(format!("{}/metrics", b.base)).send().await.unwrap().text().await.unwrap();
    assert!(hits.lines().any(|l| l.starts_with("sconce:cache_hits_total") && l.ends_with(" 2")), "{hits}");
}

fn block_every_output(g: &mut GatewayConfig) {
    let policy = PolicyConfig {
        output: [("BLOCKED_PATTERN".to_string(), Action::Block)].into(),
        blocked_patterns: vec![r"\S".into()],
        ..PolicyConfig::default()
    };
    g.guardrails = GuardrailsConfig { policies: vec![policy] };
}

#[tokio::test]
async fn a_blocked_stream_still_ends_with_usage_and_done_and_is_metered() {
    let server = Server::start(block_every_output).await;
    let messages = json!([{"role": "user", "content": "say something"}]);
    let mut request = json!({"model": MODEL, "max_tokens": 200, "ignore_eos": true, "stream": true,
        "stream_options": {"include_usage": true}, "messages": messages});
    let response = server.chat(&request, &[]).await;
    assert_eq!(response.status(), 200);
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    assert_eq!(rest.last().unwrap()["choices"][0]["finish_reason"], "content_filter");
    let usage = &usage_chunk["usage"];
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..200).contains(&completion), "billed {completion} tokens: generation stops at the block");
    let tokenized =
        server.client.post(format!("{}/tokenize", server.base)).json(&json!({"model": MODEL, "messages": messages}));
    let tokenized: Value = tokenized.send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["prompt_tokens"], tokenized["count"]);

    let (status, report) = server.get("/v1/usage?group_by=model").await;
    assert_eq!(status, 200, "{report}");
    let row = &report["data"][0];
    assert_eq!((row["requests"].as_u64(), row["completion_tokens"].as_u64()), (Some(1), Some(completion)));
    assert_eq!(row["prompt_tokens"], usage["prompt_tokens"]);

    request.as_object_mut().unwrap().remove("stream_options");
    let hidden = server.chat(&request, &[]).await.text().await.unwrap();
    let chunks = common::chunks(&common::sse_data(&hidden));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "content_filter");
    assert!(chunks.iter().all(|c| c["usage"].is_null()), "usage only when asked: {hidden}");
}

#[tokio::test]
async fn v1_models_lists_every_servable_name_and_each_answers() {
    let server = Server::start(|g| {
        let far = DeploymentConfig { url: Some(closed_port_url()), ..local("far") };
        let groups = vec![GroupConfig::new("chat", vec![local("local")]), GroupConfig::new("remote", vec![far])];
        let mut routing = RoutingConfig { groups, ..RoutingConfig::default() };
        routing.aliases.insert("gpt-4o-mini".into(), "chat".into());
        routing.auto.tiers.insert("fast".into(), "chat".into());
        g.routing = routing;
    })
    .await;
    let (status, list) = server.get("/v1/models").await;
    assert_eq!((status, &list["object"]), (200, &json!("list")));
    let cards = list["data"].as_array().unwrap();
    let mut ids: Vec<&str> = cards.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["auto", "chat", "gpt-4o-mini", "remote", MODEL]);
    for card in cards {
        assert_eq!(card["object"], "model");
        assert!(card["owned_by"].as_str().is_some_and(|o| !o.is_empty()) && card["created"].is_u64(), "{card}");
        let (status, alone) = server.get(&format!("/v1/models/{}", card["id"].as_str().unwrap())).await;
        assert_eq!((status, &alone), (200, card));
    }
    let card = |id: &str| cards.iter().find(|c| c["id"] == id).unwrap();
    let local_len = &card(MODEL)["max_model_len"];
    assert!(local_len.is_u64() && card(MODEL)["sconce"].is_null());
    let alias = card("gpt-4o-mini");
    assert_eq!(alias["sconce"], json!({"kind": "alias", "group": "chat", "deployments": ["local"]}));
    assert_eq!((&alias["root"], &alias["max_model_len"]), (&json!("chat"), local_len));
    assert_eq!(card("remote")["sconce"]["deployments"], json!(["far"]));
    assert!(card("remote")["max_model_len"].is_null(), "unknown for a remote upstream");
    assert_eq!(card("auto")["sconce"], json!({"kind": "auto", "tiers": {"fast": "chat"}}));
    let (status, missing) = server.get("/v1/models/nope").await;
    assert_eq!((status, &missing["error"]["code"]), (404, &json!("model_not_found")));
    for id in [MODEL, "chat", "gpt-4o-mini", "auto"] {
        assert_eq!(server.chat(&body(id, "hi"), &[]).await.status(), 200, "{id} is listed, so it must answer");
    }
}

/// An upstream stand-in: `/metrics` serves changeable Prometheus text; chat answers its name.
struct Stub {
    url: String,
    metrics: Arc<Mutex<String>>,
    scrapes: Arc<AtomicUsize>,
}

fn prometheus_text(waiting: u32, kv_usage: f64) -> String {
    format!(
        "# TYPE sconce:num_requests_waiting gauge\nsconce:num_requests_waiting{{model_name=\"m\"}} {waiting}\n\
         # TYPE sconce:kv_cache_usage_perc gauge\nsconce:kv_cache_usage_perc{{model_name=\"m\"}} {kv_usage}\n"
    )
}

async fn stub(name: &'static str, waiting: u32, kv_usage: f64) -> Stub {
    let metrics = Arc::new(Mutex::new(prometheus_text(waiting, kv_usage)));
    let scrapes = Arc::new(AtomicUsize::new(0));
    let (text, count) = (metrics.clone(), scrapes.clone());
    let scrape = move || {
        count.fetch_add(1, Ordering::SeqCst);
        let body = text.lock().unwrap().clone();
        async move { body }
    };
    let answer = move || async move { axum::Json(Chat::text_response(format!("chatcmpl-{name}"), name, name)) };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .route("/v1/chat/completions", axum::routing::post(answer));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Stub { url, metrics, scrapes }
}

impl Stub {
    fn deployment(&self, name: &str) -> DeploymentConfig {
        DeploymentConfig { name: name.into(), url: Some(self.url.clone()), ..DeploymentConfig::default() }
    }

    fn scrapes(&self) -> usize {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// Sets new loads and waits for two more scrapes, so one full poll has read them.
    async fn report(&self, waiting: u32, kv_usage: f64) {
        *self.metrics.lock().unwrap() = prometheus_text(waiting, kv_usage);
        let seen = self.scrapes();
        eventually("a fresh scrape", || self.scrapes() >= seen + 2).await;
    }
}

async fn answered_by(server: &Server, model: &str) -> String {
    let response = server.chat(&body(model, "hi"), &[]).await;
    assert_eq!(response.status(), 200);
    header(&response, "x-sconce-deployment")
}

#[tokio::test]
async fn kv_aware_groups_poll_upstream_metrics_and_steer_to_the_idle_one() {
    let (a, b) = (stub("a", 6, 0.9).await, stub("b", 0, 0.1).await);
    let (c, d) = (stub("c", 6, 0.9).await, stub("d", 0, 0.1).await);
    let server = Server::start(|g| {
        let mut aware = GroupConfig::new("aware", vec![a.deployment("a"), b.deployment("b")]);
        aware.kv_aware = Some(true);
        let plain = GroupConfig::new("plain", vec![c.deployment("c"), d.deployment("d")]);
        g.routing = RoutingConfig { metrics_poll_ms: 20, groups: vec![aware, plain], ..RoutingConfig::default() };
    })
    .await;
    b.report(0, 0.1).await;
    a.report(6, 0.9).await;
    for _ in 0..3 {
        assert_eq!(answered_by(&server, "aware").await, "b");
        assert_eq!(answered_by(&server, "plain").await, "c", "ties go to the first deployment");
    }
    assert_eq!(c.scrapes() + d.scrapes(), 0, "a group that does not ask is never polled");
    a.report(0, 0.0).await;
    b.report(9, 0.97).await;
    for _ in 0..3 {
        assert_eq!(answered_by(&server, "aware").await, "a");
    }
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
