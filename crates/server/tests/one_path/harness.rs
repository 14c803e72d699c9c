//! The harness of `one_path.rs` and `one_path_ids.rs` (issue #10): the real `sconce`
//! binary, spawned over the tiny fixture model and driven over HTTP on loopback only, so
//! these tests do not depend on the server's in-process Rust API.
#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::common::{self, chunks, sse_data, user_messages};

/// The served model name; `config/examples/gateway.toml` deploys it as `local` in group `chat`.
pub const MODEL: &str = "smollm2-135m-instruct";

/// The admin key every harness server gets in `SCONCE_ADMIN_KEY` (a test's `env` may replace it):
/// with the gateway on, auth is required.
pub const ADMIN: &str = "sk-admin-harness";

/// `sconce serve` on a free port, killed when dropped; its data dir and config live in `dir`.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Writes `config(dir)` as the TOML config, starts the binary with `env` and waits for `/ready`.
    pub async fn start(config: impl FnOnce(&Path) -> String, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sconce.toml");
        std::fs::write(&file, config(dir.path())).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sconce"))
            .args(["serve", "--port", "0", "--served-model-name", MODEL, "--kv-cache-memory", "16MiB", "--config"])
            .arg(&file)
            .arg("--model")
            .arg(common::tiny_model_dir())
            .env("RUST_LOG", "info")
            .env("SCONCE_ADMIN_KEY", ADMIN)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (log, stderr) = (Arc::new(Mutex::new(Vec::new())), child.stderr.take().unwrap());
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        // Keeps draining stderr (a full pipe would stall the server); ends when the child does.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.split("listening on ").nth(1) {
                    let _ = address_tx.send(address.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = address_rx.recv_timeout(Duration::from_secs(60));
        let mut server = Self { base: String::new(), client, dir, child, log };
        server.base = base.unwrap_or_else(|_| panic!("the server never logged its address:\n{}", server.log_tail()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.client.get(server.url("/ready")).send().await.map_or(true, |r| r.status() != 200) {
            let exited = server.child.try_wait().unwrap();
            assert!(exited.is_none() && Instant::now() < deadline, "never ready ({exited:?}):\n{}", server.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// The exit status once the process has exited by itself, waiting up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(30)..].join("\n")
    }

    /// Every line the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value, headers: &[(&str, HeaderValue)]) -> Reply {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, value.clone());
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        Reply { status, headers, text: response.text().await.unwrap() }
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    /// Every `request_id` in the SQLite ledger once at least `count` rows are committed (10 s at most).
    pub async fn ledger_ids(&self, count: usize) -> Vec<String> {
        let url = format!("sqlite://{}", self.dir.path().join("sconce.db").display());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut ids = Vec::new();
            if let Ok(mut db) = sqlx::SqliteConnection::connect(&url).await {
                let query = sqlx::query_scalar("SELECT request_id FROM usage_ledger");
                ids = query.fetch_all(&mut db).await.unwrap_or_default();
                let _ = db.close().await;
            }
            if ids.len() >= count {
                return ids;
            }
            assert!(Instant::now() < deadline, "{} ledger rows, not {count}, after 10 s: {ids:?}", ids.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The parsed chunks of a 200 SSE reply, `[DONE]` checked.
    pub fn chunks(&self) -> Vec<Value> {
        assert_eq!(self.status, 200, "{}", self.text);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}: {}", self.text);
        chunks(&sse_data(&self.text))
    }

    /// `x-request-id`, which every reply must carry.
    pub fn request_id(&self) -> String {
        self.header("x-request-id").expect("every reply carries x-request-id")
    }
}

/// What went wrong, gathered so one run reports every case that fails, not just the first.
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    pub fn assert_none(self) {
        assert!(self.0.is_empty(), "{} problem(s):\n{}", self.0.len(), self.0.join("\n"));
    }
}

pub fn text_of(reply: &Value) -> String {
    reply["choices"].as_array().unwrap().iter().filter_map(|choice| choice["text"].as_str()).collect()
}

pub fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub fn completion(prompt: &str, stream: bool) -> Value {
    json!({"model": MODEL, "prompt": prompt, "max_tokens": 6, "temperature": 0, "stream": stream})
}

pub fn chat(text: &str, stream: bool) -> Value {
    json!({"model": MODEL, "messages": user_messages(text), "max_tokens": 6, "temperature": 0, "stream": stream})
}
