//! Client disconnects and SIGTERM draining.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{chunks, spawn_serve, sse_data, wait_ready, TestServer};
use serde_json::json;

/// Long enough that the request is still generating when the client goes away.
fn long_stream_request() -> serde_json::Value {
    json!({"prompt": "keep going", "n": 16, "max_tokens": 480, "ignore_eos": true, "stream": true})
}

#[tokio::test]
async fn disconnect_mid_stream_aborts_and_frees_the_kv_blocks() {
    let server = TestServer::start().await;
    let backend = server.state.backend().unwrap().clone();
    let total = backend.stats().kv_blocks_total;
    assert!(total > 0);
    let mut response = server.post("/v1/completions", &long_stream_request()).await;
    assert_eq!(response.status(), 200);
    for _ in 0..3 {
        response.chunk().await.unwrap().expect("a chunk");
    }
    // The stats snapshot is published after each engine step, so it may trail the first chunks.
    let started = Instant::now();
    while backend.stats().kv_blocks_free == total {
        assert!(started.elapsed() < Duration::from_secs(1), "the request holds KV blocks while it runs");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(response);

    let dropped = Instant::now();
    while backend.stats().kv_blocks_free != total {
        assert!(dropped.elapsed() < Duration::from_secs(1), "KV blocks not freed within 1 s: {:?}", backend.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let generated = backend.stats().generation_tokens_total;
    assert!(generated < 16 * 480, "the request ran to the end ({generated} tokens) instead of being aborted");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.state.in_flight(), 0);
}

/// Polls `url` until it answers `status`; the signal is handled asynchronously.
async fn wait_for_status(client: &reqwest::Client, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = client.get(url).send().await.expect("the server answers while draining");
        if response.status() == status {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut serve = spawn_serve("tiny", std::path::Path::new("/dev/null"), &["--drain-timeout", "20"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &serve.base).await;

    let mut request = long_stream_request();
    request["stream_options"] = json!({"include_usage": true});
    let mut response = client.post(format!("{}/v1/completions", serve.base)).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    let killed = Command::new("kill").args(["-TERM", &serve.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    // A fresh connection still gets answers while draining: not ready, and no new work.
    wait_for_status(&client, &format!("{}/ready", serve.base), 503).await;
    let refused = client
        .post(format!("{}/v1/completions", serve.base))
        .json(&json!({"prompt": "late", "max_tokens": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);

    while let Some(bytes) = response.chunk().await.unwrap() {
        body.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    let chunks = chunks(&sse_data(&body));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 16 * 480, "the in-flight request completed");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit after draining");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn print_config_shows_flags_over_environment_over_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sconce.toml");
    std::fs::write(&file, "[server]\nport = 7001\nhost = \"0.0.0.0\"\n[engine]\nmax_num_seqs = 3\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args(["serve", "--print-config", "--port", "7003", "--config"])
        .arg(&file)
        .env("SCONCE_PORT", "7002")
        .env("SCONCE_MAX_NUM_SEQS", "4")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: toml::Table = toml::from_str(std::str::from_utf8(&output.stdout).unwrap()).unwrap();
    assert_eq!(printed["server"]["port"].as_integer(), Some(7003));
    assert_eq!(printed["server"]["host"].as_str(), Some("0.0.0.0"));
    assert_eq!(printed["engine"]["max_num_seqs"].as_integer(), Some(4));
    assert_eq!(printed["engine"]["max_num_batched_tokens"].as_integer(), Some(2048));
}
