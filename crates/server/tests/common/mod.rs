//! Shared helpers: an in-process server on 127.0.0.1:0 over the tiny fixture model,
//! and a small SSE reader.
#![allow(dead_code, clippy::unwrap_used)]

pub mod gateway;
pub mod services;

use std::path::PathBuf;

use sconce_server::backend::Backend;
use sconce_server::config::{ByteSize, Config};
use sconce_server::{server, AppState};
use serde_json::Value;
use tokio::net::TcpListener;

pub const MODEL: &str = "tiny";

/// The random-weight fixture written by `cargo run -p xtask -- gen-tiny-model`.
pub fn tiny_model_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama");
    assert!(dir.join("config.json").exists(), "missing {}: run `cargo run -p xtask -- gen-tiny-model`", dir.display());
    dir
}

/// A config that serves the tiny model as `tiny` with a small KV cache.
pub fn tiny_config() -> Config {
    let mut config = Config::default();
    config.model.name = tiny_model_dir().to_string_lossy().into_owned();
    config.model.served_model_name = Some(MODEL.into());
    config.model.allow_hub = false;
    config.engine.kv_cache_memory = Some(ByteSize(16 << 20));
    config.server.port = 0;
    config
}

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = tiny_config();
        configure(&mut config);
        let state = AppState::new(server::settings(&config));
        server::load_embeddings(&config, &state).await.expect("the embedding models load");
        let backend = Backend::launch(&config).await.expect("the tiny model loads");
        state.set_backend(backend).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state.clone(), std::future::pending()));
        Self { base, state, client: reqwest::Client::new() }
    }

    /// A server whose model never loads, as during startup.
    pub async fn start_unloaded() -> Self {
        let state = AppState::new(server::settings(&tiny_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state.clone(), std::future::pending()));
        Self { base, state, client: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    /// POSTs and returns the status and JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// POSTs a streaming request and returns every `data:` payload, `[DONE]` included.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        sse_data(&response.text().await.unwrap())
    }

    pub async fn prompt_tokens(&self, body: &Value) -> usize {
        let (status, tokens) = self.post_json("/tokenize", body).await;
        assert_eq!(status, 200, "{tokens}");
        tokens["count"].as_u64().unwrap() as usize
    }
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("data:")))
        .map(|data| data.trim_start().to_string())
        .collect()
}

/// Parses every payload but the final `[DONE]`, which must be there.
pub fn chunks(data: &[String]) -> Vec<Value> {
    let (done, rest) = data.split_last().expect("an empty stream");
    assert_eq!(done, "[DONE]", "the stream must end with [DONE]");
    rest.iter().map(|chunk| serde_json::from_str(chunk).unwrap()).collect()
}

/// Asserts the OpenAI error envelope and returns its `error` object.
pub fn assert_envelope(body: &Value) -> &serde_json::Map<String, Value> {
    let error = body["error"].as_object().unwrap_or_else(|| panic!("no error envelope in {body}"));
    for key in ["message", "type", "param", "code"] {
        assert!(error.contains_key(key), "envelope lacks `{key}`: {body}");
    }
    assert!(error["message"].as_str().is_some_and(|message| !message.is_empty()));
    error
}

pub fn user_messages(text: &str) -> Value {
    serde_json::json!([{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}])
}

/// The `sconce` binary serving the tiny model on a free port; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sconce serve --config CONFIG` on the tiny model with 16 MiB of KV plus `extra` flags,
/// and waits for the address it logs.
pub fn spawn_serve(served_name: &str, config: &std::path::Path, extra: &[&str]) -> ServeProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args(["serve", "--port", "0", "--served-model-name", served_name, "--kv-cache-memory", "16MiB"])
        .arg("--config")
        .arg(config)
        .args(extra)
        .arg("--model")
        .arg(tiny_model_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(address) = line.split("listening on ").nth(1) {
                let _ = address_tx.send(address.trim().to_string());
            }
        }
    });
    let base = address_rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the server logs its address");
    ServeProcess { child, base }
}

/// Polls `/ready` until it answers 200 (at most 60 s).
pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while client.get(format!("{base}/ready")).send().await.map_or(true, |r| r.status() != 200) {
        assert!(std::time::Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether the official `openai` Python SDK is installed. Where it is not, the SDK tests skip,
/// except in CI, which installs it and sets `SCONCE_TEST_REQUIRE_SDK` (there this panics).
pub fn openai_sdk_installed() -> bool {
    let has_sdk = std::process::Command::new("python3").args(["-c", "import openai"]).output();
    if has_sdk.is_ok_and(|out| out.status.success()) {
        return true;
    }
    assert!(std::env::var_os("SCONCE_TEST_REQUIRE_SDK").is_none(), "the openai SDK is required here");
    eprintln!("skipped: `pip install openai` to run the SDK check");
    false
}

/// Runs `tests/sdk/{script}` with `args` (off the async workers) and reads what it prints as JSON.
pub async fn run_sdk_script(script: &str, args: Vec<String>) -> Value {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let run = move || std::process::Command::new("python3").arg(path).args(args).output().unwrap();
    let output = tokio::task::spawn_blocking(run).await.unwrap();
    assert!(output.status.success(), "the SDK script failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}
