//! Issue #10 "One request path", part 2: one request id in the `x-request-id` header, the
//! body `id`, the ledger row and the exported span, for chat and completions alike; and the
//! client's W3C trace context. The harness and part 1: `one_path.rs`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;
#[path = "one_path/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use harness::{chat, completion, header_value, unique, Problems, Server};
use serde_json::{json, Value};

const ADMIN: &str = "sk-admin-one-path";
const SERVER_KIND: u64 = 2;
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

type Received = Arc<Mutex<Vec<Value>>>;

/// An OTLP/HTTP JSON collector on loopback keeping every export; returns its base URL.
async fn start_collector(received: Received) -> String {
    async fn traces(State(received): State<Received>, body: Bytes) -> axum::Json<Value> {
        received.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
        axum::Json(json!({}))
    }
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(traces)).with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[derive(Debug)]
struct Span {
    trace_id: String,
    parent: String,
    attributes: HashMap<String, Value>,
}

/// The request (server-kind) spans once `count` have been exported (15 s at most).
async fn request_spans(received: &Received, count: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bodies = received.lock().unwrap().clone();
        let resources = bodies.iter().flat_map(|body| body["resourceSpans"].as_array().cloned().unwrap_or_default());
        let scopes = resources.flat_map(|r| r["scopeSpans"].as_array().cloned().unwrap_or_default());
        let spans: Vec<Span> = scopes
            .flat_map(|s| s["spans"].as_array().cloned().unwrap_or_default())
            .filter(|span| span["kind"].as_u64() == Some(SERVER_KIND))
            .map(|span| Span {
                trace_id: span["traceId"].as_str().unwrap().to_string(),
                parent: span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                attributes: span["attributes"].as_array().unwrap().iter().map(attribute).collect(),
            })
            .collect();
        if spans.len() >= count {
            return spans;
        }
        assert!(Instant::now() < deadline, "{} request spans, not {count}, after 15 s", spans.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attribute(kv: &Value) -> (String, Value) {
    let value = &kv["value"];
    (kv["key"].as_str().unwrap().to_string(), value.get("stringValue").cloned().unwrap_or_else(|| value.clone()))
}

/// The gateway with auth (the admin key from `SCONCE_ADMIN_KEY`), a fast ledger and, with
/// a `collector`, OTLP export to it (batched every 100 ms); and a client key.
async fn gateway_with_auth(collector: Option<&str>) -> (Server, String) {
    let config = |dir: &Path| {
        let otlp = collector.map(|url| format!("otlp_endpoint = {}\n", json!(url))).unwrap_or_default();
        format!(
            "[gateway]\nenabled = true\nadmin_key_env = \"SCONCE_ADMIN_KEY\"\ndata_dir = {}\n\
             ledger_batch_interval_ms = 50\n{otlp}",
            json!(dir)
        )
    };
    let server = Server::start(config, &[("SCONCE_ADMIN_KEY", ADMIN), ("OTEL_BSP_SCHEDULE_DELAY", "100")]).await;
    let new_key = json!({"alias": "one-path", "team": "research"});
    let created = server.post("/admin/keys", Some(ADMIN), &new_key, &[]).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let key = created.json()["key"].as_str().unwrap().to_string();
    (server, key)
}

/// Chat and completions, streamed and not, with and without a client `x-request-id`: the
/// reply header, every body `id` (`chatcmpl-<id>` / `cmpl-<id>`), the ledger row's
/// `request_id` and the request span's `sconce.request_id` are one id.
#[tokio::test]
async fn one_request_id_in_the_header_body_ledger_row_and_span_of_chat_and_completions() {
    let received = Received::default();
    let (server, key) = gateway_with_auth(Some(&start_collector(received.clone()).await)).await;
    let cases = [
        ("/v1/chat/completions", "chatcmpl", false, Some(unique("client-chat"))),
        ("/v1/chat/completions", "chatcmpl", true, None),
        ("/v1/completions", "cmpl", false, None),
        ("/v1/completions", "cmpl", true, Some(unique("client-cmpl"))),
    ];
    let (mut ids, mut problems) = (Vec::new(), Problems::default());
    for (path, prefix, stream, sent) in cases {
        let body = if path.ends_with("chat/completions") { chat("hi", stream) } else { completion("hi", stream) };
        let headers: Vec<_> = sent.iter().map(|id| ("x-request-id", header_value(id))).collect();
        let reply = server.post(path, Some(&key), &body, &headers).await;
        let id = reply.request_id();
        let case = format!("{path} stream={stream} sent={sent:?}");
        if let Some(sent) = &sent {
            problems.check(&id == sent, || format!("{case}: the client's valid id came back as {id}"));
        }
        let bodies = if stream { reply.chunks() } else { vec![reply.json()] };
        let mut body_ids: Vec<&Value> = bodies.iter().map(|body| &body["id"]).collect();
        body_ids.dedup();
        let expected = json!(format!("{prefix}-{id}"));
        problems.check(body_ids == [&expected], || format!("{case}: x-request-id {id}, body ids {body_ids:?}"));
        ids.push(id);
    }
    let ledger = server.ledger_ids(ids.len()).await;
    let spans = request_spans(&received, ids.len()).await;
    let span_ids: Vec<&Value> = spans.iter().map(|span| &span.attributes["sconce.request_id"]).collect();
    for id in &ids {
        problems.check(ledger.contains(id), || format!("no ledger row has request_id {id}: {ledger:?}"));
        let in_span = span_ids.contains(&&json!(id));
        problems.check(in_span, || format!("no request span has sconce.request_id {id}: {span_ids:?}"));
    }
    problems.assert_none();
}

/// A W3C `traceparent` from the client puts the request span in the client's trace, under
/// the client's span.
#[tokio::test]
async fn a_client_traceparent_is_the_parent_of_the_exported_request_span() {
    let received = Received::default();
    let (server, key) = gateway_with_auth(Some(&start_collector(received.clone()).await)).await;
    let traceparent = header_value(&format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"));
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let body = if path == "/v1/completions" { completion("hi", false) } else { chat("hi", false) };
        let reply = server.post(path, Some(&key), &body, &[("traceparent", traceparent.clone())]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    }
    let spans = request_spans(&received, 2).await;
    let contexts: Vec<(&str, &str)> = spans.iter().map(|span| (span.trace_id.as_str(), span.parent.as_str())).collect();
    assert_eq!(contexts, [(TRACE_ID, PARENT_SPAN_ID); 2], "(trace id, parent span id) of each request span");
}

/// A client id is kept only when it is 1 to 128 of letters, digits and `-_.:`; anything else
/// is replaced by a generated id of that shape, which the body `id` carries too.
#[tokio::test]
async fn an_invalid_client_request_id_is_replaced_by_a_generated_one() {
    let (server, key) = gateway_with_auth(None).await;
    let (too_long, mut problems) = ("a".repeat(300), Problems::default());
    for sent in [too_long.as_str(), "has spaces in it", "naïve-ünïcode"] {
        for (path, prefix) in [("/v1/chat/completions", "chatcmpl"), ("/v1/completions", "cmpl")] {
            let body = if prefix == "cmpl" { completion("hi", false) } else { chat("hi", false) };
            let reply = server.post(path, Some(&key), &body, &[("x-request-id", header_value(sent))]).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text);
            let id = reply.request_id();
            let well_formed = id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            let replaced = id != sent && !id.is_empty() && id.len() <= 128 && well_formed;
            problems.check(replaced, || format!("{path}: {sent:?} came back as {id:?}"));
            let body_id = reply.json()["id"].clone();
            problems
                .check(body_id == format!("{prefix}-{id}"), || format!("{path}: x-request-id {id}, body {body_id}"));
        }
    }
    problems.assert_none();
}
