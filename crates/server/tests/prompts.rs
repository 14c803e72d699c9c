//! The prompt registry end to end: real HTTP on loopback, a real SQLite file (and Postgres
//! where `SCONCE_TEST_POSTGRES_URL` is set), the tiny model behind the gateway.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::gateway::{on_sqlite_and_postgres, GatewayServer, TestDb, ADMIN};
use common::{assert_envelope, TestServer, MODEL};
use futures_util::StreamExt;
use reqwest::Method;
use sconce_gateway::guard::{Action, PolicyConfig};
use serde_json::{json, Value};

impl GatewayServer {
    async fn send(&self, method: Method, path: &str, key: &str, body: Option<&Value>) -> reqwest::Response {
        let mut request = self.request(method, path, Some(key));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// An admin call's status and JSON body.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let response = self.send(method, path, ADMIN, body.as_ref()).await;
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn create_prompt(&self, body: Value) -> Value {
        let (status, created) = self.admin(Method::POST, "/admin/prompts", Some(body)).await;
        assert_eq!(status, 200, "{created}");
        created
    }

    async fn label(&self, name: &str, label: &str, target: Value) {
        let path = format!("/admin/prompts/{name}/labels/{label}");
        let (status, body) = self.admin(Method::PUT, &path, Some(target)).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn chat(&self, body: &Value) -> reqwest::Response {
        self.send(Method::POST, "/v1/chat/completions", ADMIN, Some(body)).await
    }

    /// Tokens of `messages` through the chat template, as `/tokenize` counts them.
    async fn tokens(&self, messages: Value) -> u64 {
        let body = json!({"model": MODEL, "messages": messages});
        let response = self.send(Method::POST, "/tokenize", ADMIN, Some(&body)).await;
        response.json::<Value>().await.unwrap()["count"].as_u64().unwrap()
    }
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|value| value.to_str().unwrap())
}

/// A prompt request with the user's own `hi` after the prompt's messages.
fn by_prompt(prompt: Value) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "prompt": prompt})
}

fn system_and_hi(system: &str) -> Value {
    json!([{"role": "system", "content": system}, {"role": "user", "content": "hi"}])
}

/// The status, the prompt header and the prompt tokens of one non-streamed request.
async fn prompt_tokens(server: &GatewayServer, body: &Value) -> (u16, Option<String>, u64) {
    let response = server.chat(body).await;
    let (status, used) = (response.status().as_u16(), header(&response, "x-sconce-prompt").map(str::to_string));
    let reply: Value = response.json().await.unwrap();
    (status, used, reply["usage"]["prompt_tokens"].as_u64().unwrap_or(0))
}

on_sqlite_and_postgres!(prompts_render_by_label_and_version, concurrent_creates_number_versions_without_gaps);

/// Versions count up per name even when several are created at once.
async fn concurrent_creates_number_versions_without_gaps(db: TestDb) {
    let server = GatewayServer::start(db.config()).await;
    let create = |i: usize| {
        let body = json!({"name": "busy", "messages": [{"role": "user", "content": format!("take {i}")}]});
        let server = &server;
        async move { server.create_prompt(body).await["version"].as_u64().unwrap() }
    };
    let mut versions: Vec<u64> = futures_util::stream::iter(0..8).map(create).buffer_unordered(8).collect().await;
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
    let (_, shown) = server.admin(Method::GET, "/admin/prompts/busy", None).await;
    assert_eq!(shown["latest_version"], 8);
    server.close().await;
    db.remove().await;
}

const V1: &str = "You help with {{ product }}.";
const V2: &str = "You are the {{ product }} expert. Answer in one word, always.";

async fn prompts_render_by_label_and_version(db: TestDb) {
    let server = GatewayServer::start(db.config()).await;
    let first = json!({"name": "support", "messages": [{"role": "system", "content": V1}], "labels": ["production"]});
    let created = server.create_prompt(first).await;
    assert_eq!((created["version"].as_u64(), &created["variables"]), (Some(1), &json!(["product"])));
    let second = json!({"name": "support", "messages": [{"role": "system", "content": V2}], "message": "terser"});
    assert_eq!(server.create_prompt(second).await["version"], 2);

    let kettles = by_prompt(json!({"name": "support", "label": "production", "variables": {"product": "kettles"}}));
    let response = server.chat(&kettles).await;
    assert_eq!(
        (header(&response, "x-sconce-prompt"), header(&response, "x-sconce-prompt-label")),
        (Some("support@1"), Some("production"))
    );
    let usage = response.json::<Value>().await.unwrap()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage, server.tokens(system_and_hi("You help with kettles.")).await);
    let long = "industrial espresso machines";
    let espresso = by_prompt(json!({"name": "support", "label": "production", "variables": {"product": long}}));
    let (_, _, espresso_tokens) = prompt_tokens(&server, &espresso).await;
    assert_eq!(espresso_tokens, server.tokens(system_and_hi(&format!("You help with {long}."))).await);
    assert_ne!(espresso_tokens, usage, "the variable reached the model");
    let pinned = by_prompt(json!({"name": "support", "version": 2, "variables": {"product": "kettles"}}));
    let response = server.chat(&pinned).await;
    assert_eq!(
        (header(&response, "x-sconce-prompt"), header(&response, "x-sconce-prompt-label")),
        (Some("support@2"), None)
    );
    let usage = response.json::<Value>().await.unwrap()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage, server.tokens(system_and_hi(&V2.replace("{{ product }}", "kettles"))).await);

    refusals(&server).await;
    server.label("support", "production", json!({"version": 2})).await;
    assert_eq!(prompt_tokens(&server, &kettles).await.1.as_deref(), Some("support@2"), "the label moved");
    listings(&server).await;
    let (status, _) = server.admin(Method::DELETE, "/admin/prompts/support/labels/production", None).await;
    assert_eq!(status, 200);
    assert_eq!(server.chat(&kettles).await.status(), 404, "the label is gone");

    let rows = server.rows(9).await;
    let used: Vec<(String, u32)> =
        rows.iter().filter(|row| row.status == 200).map(|row| (row.prompt_name.clone(), row.prompt_version)).collect();
    let count = |version: u32| used.iter().filter(|(name, v)| name == "support" && *v == version).count() as u64;
    assert_eq!((count(1), count(2)), (2, 2), "{used:?}");
    let (_, report) = server.admin(Method::GET, "/v1/usage?group_by=prompt", None).await;
    let groups: HashMap<&str, u64> = report["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| (group["group"].as_str().unwrap(), group["requests"].as_u64().unwrap()))
        .collect();
    assert_eq!((groups["support@1"], groups["support@2"]), (2, 2), "{report}");
    server.close().await;
    db.remove().await;
}

/// 403 for other keys, 400 for a missing variable, 404 for what does not exist.
async fn refusals(server: &GatewayServer) {
    let (status, key) = server.admin(Method::POST, "/admin/keys", Some(json!({"alias": "app", "team": "t"}))).await;
    assert_eq!(status, 200);
    let key = key["key"].as_str().unwrap();
    for (method, path) in [
        (Method::POST, "/admin/prompts"),
        (Method::GET, "/admin/prompts"),
        (Method::GET, "/admin/prompts/support"),
        (Method::PUT, "/admin/prompts/support/labels/production"),
        (Method::DELETE, "/admin/prompts/support/labels/production"),
    ] {
        let response = server.send(method.clone(), path, key, Some(&json!({}))).await;
        assert_eq!(response.status(), 403, "{method} {path}");
    }
    let (status, error) =
        server.admin(Method::POST, "/admin/prompts", Some(json!({"name": "x", "messages": []}))).await;
    assert_eq!((status, error["error"]["param"].as_str()), (400, Some("messages")));
    let missing = server.chat(&by_prompt(json!({"name": "support", "version": 1}))).await;
    assert_eq!(missing.status(), 400);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(assert_envelope(&error)["param"], "prompt.variables");
    assert!(error["error"]["message"].as_str().unwrap().contains("product"), "{error}");
    for (prompt, code) in [
        (json!({"name": "nope"}), "prompt_not_found"),
        (json!({"name": "support", "label": "canary"}), "prompt_label_not_found"),
        (json!({"name": "support", "version": 7}), "prompt_version_not_found"),
    ] {
        let response = server.chat(&by_prompt(prompt.clone())).await;
        assert_eq!(response.status(), 404, "{prompt}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(assert_envelope(&error)["code"], code);
    }
    let (status, _) = server.admin(Method::PUT, "/admin/prompts/support/labels/x", Some(json!({"version": 9}))).await;
    assert_eq!(status, 404);
    let (status, _) =
        server.admin(Method::PUT, "/admin/prompts/support/labels/latest", Some(json!({"version": 1}))).await;
    assert_eq!(status, 400);
}

async fn listings(server: &GatewayServer) {
    let (status, list) = server.admin(Method::GET, "/admin/prompts", None).await;
    assert_eq!(status, 200);
    let support = &list["data"][0];
    assert_eq!((support["name"].as_str(), support["latest_version"].as_u64()), (Some("support"), Some(2)));
    assert_eq!(support["labels"]["production"], json!({"version": 2}));
    let (status, shown) = server.admin(Method::GET, "/admin/prompts/support", None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        (shown["versions"][0]["version"].as_u64(), shown["versions"][0]["message"].as_str()),
        (Some(2), Some("terser"))
    );
    assert_eq!(shown["versions"][1]["messages"][0]["content"], V1);
    assert_eq!(server.admin(Method::GET, "/admin/prompts/nope", None).await.0, 404);
}

#[tokio::test]
async fn an_experiment_splits_users_evenly_and_keeps_each_on_one_version() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(db.config()).await;
    for system in ["Variant A.", "Variant B, which is longer."] {
        server.create_prompt(json!({"name": "exp", "messages": [{"role": "system", "content": system}]})).await;
    }
    server.label("exp", "production", json!({"split": {"1": 50, "2": 50}})).await;
    let ask = |user: usize| {
        let mut body = by_prompt(json!({"name": "exp", "label": "production"}));
        body["user"] = json!(format!("user-{user}"));
        let server = &server;
        async move { (user, prompt_tokens(server, &body).await.1.unwrap()) }
    };
    let first: HashMap<usize, String> =
        futures_util::stream::iter(0..200).map(ask).buffer_unordered(16).collect().await;
    let on_a = first.values().filter(|version| *version == "exp@1").count();
    assert!((70..=130).contains(&on_a), "{on_a} of 200 users on exp@1");
    assert_eq!(first.values().filter(|version| *version == "exp@2").count(), 200 - on_a);
    let again: Vec<(usize, String)> = futures_util::stream::iter(0..50).map(ask).buffer_unordered(16).collect().await;
    for (user, version) in &again {
        assert_eq!(&first[user], version, "user-{user} switched versions");
    }
    let repeats_on_a = again.iter().filter(|(_, version)| version == "exp@1").count();
    server.rows(250).await;
    let (_, report) = server.admin(Method::GET, "/v1/usage?group_by=prompt", None).await;
    let requests = |group: &str| {
        report["data"].as_array().unwrap().iter().find(|g| g["group"] == group).unwrap()["requests"].as_u64().unwrap()
    };
    assert_eq!(requests("exp@1"), (on_a + repeats_on_a) as u64, "{report}");
    assert_eq!(requests("exp@2"), (250 - on_a - repeats_on_a) as u64, "{report}");
    assert!(server.rows(250).await.iter().all(|row| row.prompt_label == "production"));
    server.close().await;
}

#[tokio::test]
async fn the_cache_key_carries_the_prompt_version() {
    let db = TestDb::sqlite();
    let mut config = db.config();
    config.cache.enabled = true;
    let server = GatewayServer::start(config).await;
    let same = json!({"name": "same", "messages": [{"role": "system", "content": "Say {{ word }}."}], "labels": ["production"]});
    server.create_prompt(same.clone()).await;
    let mut second = same;
    second["labels"] = json!([]);
    server.create_prompt(second).await;
    let cache = |prompt: Value| {
        let mut body = by_prompt(prompt);
        body["temperature"] = json!(0);
        let server = &server;
        async move {
            let response = server.chat(&body).await;
            assert_eq!(response.status(), 200);
            header(&response, "x-sconce-cache").unwrap().to_string()
        }
    };
    let word = |word: &str| json!({"word": word});
    assert_eq!(cache(json!({"name": "same", "version": 1, "variables": word("hi")})).await, "miss");
    assert_eq!(cache(json!({"name": "same", "version": 2, "variables": word("hi")})).await, "miss", "v2 renders alike");
    assert_eq!(cache(json!({"name": "same", "version": 2, "variables": word("hi")})).await, "hit");
    assert_eq!(cache(json!({"name": "same", "label": "production", "variables": word("hi")})).await, "hit", "v1");
    assert_eq!(cache(json!({"name": "same", "version": 1, "variables": word("bye")})).await, "miss");
    server.close().await;
}

#[tokio::test]
async fn streamed_requests_and_defaults_go_through_the_prompt() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(db.config()).await;
    let params = json!({"max_tokens": 2, "ignore_eos": true, "temperature": 0});
    let system = json!([{"role": "system", "content": "Reply about {{ topic }}."}]);
    server.create_prompt(json!({"name": "brief", "messages": system, "model": MODEL, "params": params})).await;
    let prompt = json!({"name": "brief", "variables": {"topic": "tea"}});
    let bare: Value = server.chat(&json!({"prompt": prompt})).await.json().await.unwrap();
    assert_eq!((bare["model"].as_str(), bare["usage"]["completion_tokens"].as_u64()), (Some(MODEL), Some(2)));
    let rendered = json!([{"role": "system", "content": "Reply about tea."}]);
    assert_eq!(bare["usage"]["prompt_tokens"].as_u64(), Some(server.tokens(rendered).await));
    let own: Value = server.chat(&json!({"prompt": prompt, "max_tokens": 3})).await.json().await.unwrap();
    assert_eq!(own["usage"]["completion_tokens"], 3, "the request's own max_tokens wins");
    let streamed = json!({"prompt": prompt, "stream": true, "stream_options": {"include_usage": true}});
    let response = server.chat(&streamed).await;
    assert_eq!((response.status().as_u16(), header(&response, "x-sconce-prompt")), (200, Some("brief@1")));
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!((&usage["prompt_tokens"], &usage["completion_tokens"]), (&bare["usage"]["prompt_tokens"], &json!(2)));
    let rows = server.rows(3).await;
    assert!(rows.iter().all(|row| row.prompt_name == "brief" && row.prompt_version == 1 && row.status == 200));
    server.close().await;
}

#[tokio::test]
async fn guardrails_check_the_rendered_prompt() {
    let db = TestDb::sqlite();
    let mut config = db.config();
    let policy = PolicyConfig {
        name: "default".into(),
        input: [("BLOCKED_KEYWORD".to_string(), Action::Block)].into(),
        blocked_keywords: vec!["falcon".into()],
        ..PolicyConfig::default()
    };
    config.guardrails.policies.push(policy);
    let server = GatewayServer::start(config).await;
    let system = json!([{"role": "system", "content": "Tell me about {{ topic }}."}]);
    server.create_prompt(json!({"name": "topic", "messages": system})).await;
    let about = |topic: &str| by_prompt(json!({"name": "topic", "variables": {"topic": topic}}));
    assert_eq!(server.chat(&about("owls")).await.status(), 200);
    let blocked = server.chat(&about("falcon")).await;
    assert_eq!(blocked.status(), 400, "the keyword only exists once the prompt is rendered");
    let error: Value = blocked.json().await.unwrap();
    assert_eq!(error["error"]["code"], "content_policy_violation");
    server.close().await;
}

#[tokio::test]
async fn a_second_replica_picks_up_new_prompts_and_label_moves() {
    let db = TestDb::sqlite();
    let (a, b) = (GatewayServer::start(db.config()).await, GatewayServer::start(db.config()).await);
    a.create_prompt(
        json!({"name": "shared", "messages": [{"role": "system", "content": "one"}], "labels": ["production"]}),
    )
    .await;
    a.create_prompt(json!({"name": "shared", "messages": [{"role": "system", "content": "two"}]})).await;
    let request = by_prompt(json!({"name": "shared", "label": "production"}));
    assert_eq!(eventually(&b, &request, "shared@1").await, "shared@1");
    a.label("shared", "production", json!({"version": 2})).await;
    assert_eq!(eventually(&b, &request, "shared@2").await, "shared@2");
    a.close().await;
    b.close().await;
}

/// Asks until `server` answers with `expected` (the reload period is 2 s); the last answer.
async fn eventually(server: &GatewayServer, body: &Value, expected: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        last = prompt_tokens(server, body).await.1.unwrap_or_default();
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test]
async fn without_the_gateway_a_prompt_is_a_clear_400() {
    let server = TestServer::start().await;
    let (status, error) = server.post_json("/v1/chat/completions", &json!({"prompt": {"name": "support"}})).await;
    assert_eq!(status, 400);
    let error = assert_envelope(&error);
    assert_eq!((error["param"].as_str(), error["code"].as_str()), (Some("prompt"), Some("gateway_disabled")));
    assert!(error["message"].as_str().unwrap().contains("gateway"));
    let (status, error) = server.post_json("/admin/prompts", &json!({"name": "x", "messages": []})).await;
    assert_eq!((status, error["error"]["code"].as_str()), (400, Some("gateway_disabled")));
}

fn sconce(config: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sconce"))
        .arg("prompts")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(output.status.success(), "sconce prompts {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_manages_prompts_that_a_server_then_serves() {
    let db = TestDb::sqlite();
    let config = db.dir.path().join("sconce.toml");
    let toml = format!("[gateway]\nenabled = true\ndata_dir = {:?}\n", db.dir.path().display().to_string());
    std::fs::write(&config, toml).unwrap();
    let created: Value = serde_json::from_str(&sconce(
        &config,
        &["create", "cli", "--system", "About {{ x }}.", "--label", "production"],
    ))
    .unwrap();
    assert_eq!((created["version"].as_u64(), &created["labels"]), (Some(1), &json!(["production", "latest"])));
    let messages = r#"[{"role": "system", "content": "Now {{ x }}."}, {"role": "user", "content": "go"}]"#;
    sconce(&config, &["create", "cli", "--messages", messages, "-m", "second"]);
    sconce(&config, &["label", "cli", "production", "--split", "1=50,2=50"]);
    let listed = sconce(&config, &["list"]);
    assert!(listed.starts_with("cli\tv2\t2 versions\t"), "{listed}");
    assert!(listed.contains("production=v1:50/v2:50"), "{listed}");
    let shown: Value = serde_json::from_str(&sconce(&config, &["show", "cli"])).unwrap();
    assert_eq!(shown["labels"]["production"]["split"], json!({"1": 50, "2": 50}));
    sconce(&config, &["label", "cli", "production", "--version", "1"]);
    let server = GatewayServer::start(db.config()).await;
    let request = by_prompt(json!({"name": "cli", "variables": {"x": 1}}));
    assert_eq!(prompt_tokens(&server, &request).await.1.as_deref(), Some("cli@1"), "production by default");
    sconce(&config, &["label", "cli", "production", "--delete"]);
    assert_eq!(eventually(&server, &request, "cli@2").await, "cli@2", "latest once production is gone");
    server.close().await;
}
