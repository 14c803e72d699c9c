//! Request spans over OTLP/HTTP: a tiny collector on loopback receives what the server
//! exports, and the spans must carry the usage the client saw.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{tiny_config, user_messages, MODEL};
use sconce_gateway::config::{GatewayConfig, Price};
use sconce_gateway::ledger::UsageRecord;
use sconce_server::backend::Backend;
use sconce_server::{gateway, server, telemetry, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const ADMIN: &str = "sk-admin-otel";
const SERVER_KIND: u64 = 2;

type Received = Arc<Mutex<Vec<Value>>>;

/// Accepts `POST /v1/traces` (OTLP/HTTP JSON) and keeps every body. Returns its base URL.
async fn start_collector(received: Received) -> String {
    async fn traces(State(received): State<Received>, body: Bytes) -> axum::Json<Value> {
        received.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
        axum::Json(json!({}))
    }
    let app = axum::Router::new().route("/v1/traces", post(traces)).with_state(received);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

async fn start_server(config: &GatewayConfig) -> (String, AppState) {
    let state = AppState::new(server::settings(&tiny_config()));
    gateway::install_with_admin(&state, config, Some(ADMIN.into())).await.unwrap();
    state.set_backend(Backend::launch(&tiny_config()).await.unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(listener, state.clone(), std::future::pending()));
    (base, state)
}

/// One exported span, flattened from the OTLP JSON.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: u64,
    start: u128,
    end: u128,
    attributes: HashMap<String, Value>,
}

fn number(value: &Value) -> u128 {
    value.as_str().map_or_else(|| value.as_u64().unwrap() as u128, |text| text.parse().unwrap())
}

/// An OTLP `AnyValue` as plain JSON (ints arrive as strings).
fn plain(value: &Value) -> Value {
    if let Some(text) = value.get("stringValue") {
        return text.clone();
    }
    if let Some(int) = value.get("intValue") {
        return json!(number(int) as u64);
    }
    if let Some(array) = value.get("arrayValue") {
        return Value::Array(array["values"].as_array().unwrap().iter().map(plain).collect());
    }
    value.get("doubleValue").or_else(|| value.get("boolValue")).cloned().unwrap()
}

fn attributes(list: &Value) -> HashMap<String, Value> {
    let list = list.as_array().map_or(&[][..], Vec::as_slice);
    list.iter().map(|kv| (kv["key"].as_str().unwrap().to_string(), plain(&kv["value"]))).collect()
}

/// Every span of every export, with the resources' `service.name`s.
fn spans(bodies: &[Value]) -> (Vec<Span>, Vec<Value>) {
    let (mut spans, mut services) = (Vec::new(), Vec::new());
    for resource_spans in bodies.iter().flat_map(|body| body["resourceSpans"].as_array().unwrap()) {
        services.push(attributes(&resource_spans["resource"]["attributes"])["service.name"].clone());
        for span in resource_spans["scopeSpans"].as_array().unwrap().iter().flat_map(|s| s["spans"].as_array().unwrap())
        {
            spans.push(Span {
                trace_id: span["traceId"].as_str().unwrap().to_string(),
                span_id: span["spanId"].as_str().unwrap().to_string(),
                parent: span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                name: span["name"].as_str().unwrap().to_string(),
                kind: span["kind"].as_u64().unwrap(),
                start: number(&span["startTimeUnixNano"]),
                end: number(&span["endTimeUnixNano"]),
                attributes: attributes(&span["attributes"]),
            });
        }
    }
    (spans, services)
}

/// What the client saw of one request.
struct Seen {
    prompt_tokens: u64,
    completion_tokens: u64,
    finish_reason: String,
    /// From `x-sconce-cost`, which only full replies carry.
    cost: Option<f64>,
}

async fn chat(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> Seen {
    let response = client.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let cost = response.headers().get("x-sconce-cost").map(|value| value.to_str().unwrap().parse().unwrap());
    let (usage, finish_reason) = if body["stream"] == true {
        let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
        let finish = chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_string));
        (chunks.last().unwrap()["usage"].clone(), finish.unwrap())
    } else {
        let body: Value = response.json().await.unwrap();
        (body["usage"].clone(), body["choices"][0]["finish_reason"].as_str().unwrap().to_string())
    };
    let tokens = |name: &str| usage[name].as_u64().unwrap();
    Seen { prompt_tokens: tokens("prompt_tokens"), completion_tokens: tokens("completion_tokens"), finish_reason, cost }
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": MODEL, "messages": user_messages(text), "max_tokens": 6, "ignore_eos": true, "temperature": 0,
           "stream": stream,
           "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }})
}

fn assert_request_span(span: &Span, seen: &Seen, ledger: &[UsageRecord]) {
    let attr = |name: &str| span.attributes.get(name).unwrap_or_else(|| panic!("{} lacks {name}", span.name)).clone();
    assert_eq!(span.name, format!("chat {MODEL}"));
    assert_eq!(span.kind, SERVER_KIND);
    assert!(span.parent.is_empty(), "the request span is a root");
    assert_eq!(attr("gen_ai.operation.name"), "chat");
    assert_eq!(attr("gen_ai.request.model"), MODEL);
    assert_eq!(attr("gen_ai.response.model"), MODEL);
    assert_eq!(attr("gen_ai.usage.input_tokens"), seen.prompt_tokens);
    assert_eq!(attr("gen_ai.usage.output_tokens"), seen.completion_tokens);
    assert_eq!(attr("gen_ai.response.finish_reasons"), json!([seen.finish_reason]));
    let ttft_ns = attr("gen_ai.server.time_to_first_token").as_f64().unwrap() * 1e9;
    assert!(ttft_ns > 0.0 && ttft_ns <= (span.end - span.start) as f64, "ttft {ttft_ns} ns");
    assert_eq!(attr("sconce.key_alias"), "otel-client");
    assert_eq!(attr("sconce.team"), "research");
    assert_eq!(attr("http.response.status_code"), 200);
    let request_id = attr("sconce.request_id");
    let row = ledger.iter().find(|row| row.request_id == request_id).expect("the span names a ledger row");
    let cost = attr("sconce.cost").as_f64().unwrap();
    assert!(cost > 0.0 && (cost - row.cost).abs() < 1e-12, "span cost {cost}, ledger {}", row.cost);
    if let Some(seen_cost) = seen.cost {
        assert!((cost - seen_cost).abs() < 1e-8, "span cost {cost}, header {seen_cost}");
    }
}

fn assert_children(parent: &Span, all: &[Span]) {
    let children: HashMap<&str, &Span> = all
        .iter()
        .filter(|s| s.parent == parent.span_id && s.trace_id == parent.trace_id)
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut names: Vec<&str> = children.keys().copied().collect();
    names.sort_unstable();
    let expected = [
        "decode",
        "gateway.auth",
        "gateway.cache",
        "gateway.meter",
        "gateway.policy",
        "gateway.prompt",
        "prefill",
        "queue",
    ];
    assert_eq!(names, expected);
    for child in children.values() {
        assert!(child.end >= child.start, "{} ends before it starts", child.name);
        assert!(child.start >= parent.start && child.end <= parent.end, "{} lies outside the request", child.name);
    }
    assert_eq!(children["queue"].end, children["prefill"].start);
    assert_eq!(children["prefill"].end, children["decode"].start);
    assert!(children["decode"].end > children["decode"].start);
    assert_eq!(children["gateway.auth"].start, parent.start);
    assert!(children["gateway.auth"].end <= children["gateway.meter"].start);
    assert!(children["gateway.meter"].start <= children["gateway.prompt"].start);
    assert!(children["gateway.prompt"].start <= children["gateway.policy"].start);
    assert!(children["gateway.cache"].start <= children["queue"].start);
}

#[tokio::test]
async fn request_spans_reach_an_otlp_collector() {
    let received = Received::default();
    let collector = start_collector(received.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = GatewayConfig { enabled: true, data_dir: Some(dir.path().into()), ..GatewayConfig::default() };
    config.prices.insert(MODEL.into(), Price { input: 1.0, cached_input: 0.5, output: 2.0 });
    config.cache.enabled = true;
    config.otlp_endpoint = Some(collector);
    let exporter = telemetry::start(&config).unwrap().expect("an endpoint is configured");
    let (base, state) = start_server(&config).await;
    let client = reqwest::Client::new();
    let new_key = json!({"alias": "otel-client", "team": "research"});
    let request = client.post(format!("{base}/admin/keys")).bearer_auth(ADMIN).json(&new_key);
    let created: Value = request.send().await.unwrap().json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();

    let full = chat(&client, &base, &key, &chat_body("hi", false)).await;
    let streamed = chat(&client, &base, &key, &chat_body("tell me about the sea, please, in detail", true)).await;
    assert_ne!(full.prompt_tokens, streamed.prompt_tokens, "the two requests must be told apart");
    let gateway = state.gateway().unwrap().clone();
    let ledger = gateway.ledger_rows().await.unwrap();
    gateway.close().await;
    exporter.shutdown().await;

    let (spans, services) = spans(&received.lock().unwrap());
    assert!(!services.is_empty() && services.iter().all(|name| name == "sconce"), "{services:?}");
    let requests: Vec<&Span> = spans.iter().filter(|s| s.kind == SERVER_KIND).collect();
    assert_eq!(requests.len(), 2, "one span per request: {spans:#?}");
    for seen in [&full, &streamed] {
        let tokens = json!(seen.prompt_tokens);
        let span = requests.iter().find(|s| s.attributes["gen_ai.usage.input_tokens"] == tokens).unwrap();
        assert_request_span(span, seen, &ledger);
        assert_children(span, &spans);
    }
    assert_eq!(spans.len(), 2 * 9, "a request span and eight children each");
}
