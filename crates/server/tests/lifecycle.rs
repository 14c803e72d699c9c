//! Client disconnects and SIGTERM draining.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{chunks, sse_data, tiny_model_dir, TestServer};
use serde_json::json;

/// Long enough that the request is still generating when the client goes away.
fn long_stream_request() -> serde_json::Value {
    json!({"prompt": "keep going", "n": 8, "max_tokens": 400, "ignore_eos": true, "stream": true})
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
    assert!(
        backend.stats().kv_blocks_free < total,
        "the request holds KV blocks while it runs"
    );
    drop(response);

    let dropped = Instant::now();
    while backend.stats().kv_blocks_free != total {
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "KV blocks not freed within 1 s: {:?}",
            backend.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let generated = backend.stats().generation_tokens_total;
    assert!(
        generated < 8 * 400,
        "the request ran to the end ({generated} tokens) instead of being aborted"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.state.in_flight(), 0);
}

/// The `sconce` binary on a free port; killed if the test fails early.
struct ServeProcess {
    child: Child,
    base: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_serve() -> ServeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args([
            "serve",
            "--config",
            "/dev/null",
            "--port",
            "0",
            "--served-model-name",
            "tiny",
        ])
        .args([
            "--kv-cache-memory",
            "16MiB",
            "--drain-timeout",
            "20",
            "--model",
        ])
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
    let base = address_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its address");
    ServeProcess { child, base }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{base}/ready")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut serve = spawn_serve();
    let client = reqwest::Client::new();
    wait_ready(&client, &serve.base).await;

    let mut request = long_stream_request();
    request["stream_options"] = json!({"include_usage": true});
    let mut response = client
        .post(format!("{}/v1/completions", serve.base))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();

    let killed = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // A fresh connection still gets answers while draining: not ready, and no new work.
    let ready = client
        .get(format!("{}/ready", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
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
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        8 * 400,
        "the in-flight request completed"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
}
