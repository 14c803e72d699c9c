//! Engine faults are loud (issue #11): a failed step is a server error, not a 200 with
//! `finish_reason: "abort"`; a panic in the engine thread fails its requests, turns `/health`
//! and `/ready` to 503 and (with `on_panic = "exit"`) ends the process with a non-zero status.
//! Faults are injected with the test-only `fault_inject` hook / `SCONCE_FAULT_INJECT`.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "one_path/harness.rs"]
mod harness;

use std::time::Duration;

use common::{assert_envelope, sse_data, TestServer};
use sconce_server::config::Config;
use serde_json::{json, Value};

fn completion(stream: bool) -> Value {
    json!({"prompt": "count with me", "max_tokens": 20, "ignore_eos": true, "stream": stream,
           "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }})
}

async fn server_with_faults(spec: &str, configure: impl FnOnce(&mut Config)) -> TestServer {
    let spec = spec.to_string();
    TestServer::start_with(move |config| {
        config.engine.fault_inject = Some(spec);
        configure(config);
    })
    .await
}

/// The SSE payloads of a streamed reply (status 200: the headers left before the fault).
async fn stream_payloads(server: &TestServer) -> Vec<String> {
    let response = server.post("/v1/completions", &completion(true)).await;
    assert_eq!(response.status(), 200);
    sse_data(&response.text().await.unwrap())
}

#[tokio::test]
async fn a_failed_step_ends_its_requests_with_a_server_error() {
    // Step 3 fails during the stream, step 6 during the full reply.
    let server = server_with_faults("fail_at_step:3,fail_at_step:6", |_| {}).await;
    let data = stream_payloads(&server).await;
    let joined = data.join("\n");
    assert!(!joined.contains("\"abort\""), "no `abort` finish reason on the wire: {joined}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(assert_envelope(&error)["type"], "server_error", "{error}");
    let usage: Value = serde_json::from_str(&data[data.len() - 3]).unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() >= 1, "billed for what ran: {usage}");

    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 500, "{body}");
    assert_envelope(&body);

    // A failed step is not a dead engine: the next request is served.
    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get_json("/health").await.0, 200);
    // The stats snapshot is published after each engine step, so it may trail the reply.
    let backend = server.state.backend().unwrap();
    let started = std::time::Instant::now();
    while backend.stats().kv_blocks_free != backend.stats().kv_blocks_total {
        assert!(started.elapsed() < Duration::from_secs(2), "KV still held: {:?}", backend.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_engine_panic_fails_in_flight_requests_and_turns_the_probes_503() {
    let server = server_with_faults("panic_at_step:3", |_| {}).await;
    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 500, "{body}");
    assert_envelope(&body);
    for probe in ["/health", "/ready"] {
        let (status, body) = server.get_json(probe).await;
        assert_eq!(status, 503, "{probe}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("panicked"), "{body}");
    }
    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 503, "a failed engine takes no work: {body}");
}

#[tokio::test]
async fn with_on_panic_restart_the_engine_serves_again() {
    let server = server_with_faults("panic_at_step:3", |config| {
        config.engine.on_panic = sconce_server::config::OnPanic::Restart
    })
    .await;
    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(server.get_json("/health").await.0, 200);
    let (status, body) = server.post_json("/v1/completions", &completion(false)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn an_engine_panic_exits_the_process_non_zero_after_the_drain() {
    let mut server = harness::Server::start(|_| String::new(), &[("SCONCE_FAULT_INJECT", "panic_at_step:3")]).await;
    let body = json!({"model": harness::MODEL, "prompt": "hi", "max_tokens": 20, "ignore_eos": true, "stream": true});
    let reply = server.post("/v1/completions", None, &body, &[]).await;
    let data = sse_data(&reply.text);
    assert!(!reply.text.contains("\"abort\""), "{}", reply.text);
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_envelope(&error);
    let status = server.wait_exit(Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("the process kept running:\n{}", server.log_tail()));
    assert!(!status.success(), "exit status {status}:\n{}", server.log_tail());
}
