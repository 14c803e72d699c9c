//! Billing what ran and budgets that hold, over real HTTP and a real SQLite ledger: a stream
//! dropped part way is booked with the tokens it produced (and counts against TPM and the
//! budget), `continuous_usage_stats` puts the usage on every chunk, and concurrent requests
//! can never together cross a budget. Two replicas sharing Redis are in `gateway_shared_state.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::gateway::{GatewayServer, TestDb, ADMIN};
use common::MODEL;
use futures_util::StreamExt;
use sconce_gateway::config::{BudgetPeriod, GatewayConfig, Price};
use sconce_server::config::Config;
use serde_json::{json, Value};

/// Cached tokens cost as much as others, so a request's cost does not depend on the cache.
fn priced(mut config: GatewayConfig) -> GatewayConfig {
    config.prices.insert(MODEL.into(), Price { input: 1.0, cached_input: 1.0, output: 2.0 });
    config
}

/// (id, secret) of a new key.
async fn create_key(server: &GatewayServer, body: Value) -> (String, String) {
    let response = server.request(reqwest::Method::POST, "/admin/keys", Some(ADMIN)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (body["id"].as_str().unwrap().to_string(), body["key"].as_str().unwrap().to_string())
}

async fn completion(server: &GatewayServer, key: &str, body: &Value) -> reqwest::Response {
    server.request(reqwest::Method::POST, "/v1/completions", Some(key)).json(body).send().await.unwrap()
}

fn remaining_tokens(response: &reqwest::Response) -> i64 {
    response.headers()["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap()
}

/// Reads SSE chunks until one's running usage shows `tokens` completion tokens, then hangs up.
/// Returns every chunk read.
async fn read_until(response: reqwest::Response, tokens: u64) -> Vec<Value> {
    let (mut stream, mut buffer, mut chunks) = (response.bytes_stream(), String::new(), Vec::new());
    while let Some(bytes) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&bytes.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) else { continue };
            let chunk: Value = serde_json::from_str(data).unwrap();
            let seen = chunk["usage"]["completion_tokens"].as_u64().unwrap_or_else(|| panic!("no usage: {chunk}"));
            chunks.push(chunk);
            if seen >= tokens {
                return chunks;
            }
        }
    }
    panic!("the stream ended before {tokens} tokens");
}

/// Waits (at most 5 s) until the key's spend today reaches `amount`.
async fn wait_for_spend(server: &GatewayServer, key_id: &str, amount: f64) -> f64 {
    let gateway = server.state.gateway().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let spent = gateway.key_spend(key_id, BudgetPeriod::Day).await;
        if spent >= amount - 1e-12 || Instant::now() > deadline {
            return spent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stream_dropped_after_150_of_200_tokens_is_billed_for_what_ran() {
    let db = TestDb::sqlite();
    // 3 ms per engine step (the test-only fault hook): the client hangs up after 150 tokens,
    // well before the 200th, however fast the machine.
    let slow_steps = |config: &mut Config| config.engine.fault_inject = Some("step_delay_ms:3".into());
    let server = GatewayServer::start_with(priced(db.config()), slow_steps).await;
    let limits = json!({"alias": "hangup", "team": "t", "tpm_limit": 1200, "max_budget": 1.0, "budget_period": "day"});
    let (key_id, key) = create_key(&server, limits).await;
    let probe = json!({"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 1, "ignore_eos": true});
    let started = Instant::now();
    let before = remaining_tokens(&completion(&server, &key, &probe).await);

    let prompt: Vec<u32> = (1..=10).collect();
    let stream = json!({"model": MODEL, "prompt": prompt, "max_tokens": 200, "ignore_eos": true, "stream": true,
                        "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    let response = completion(&server, &key, &stream).await;
    assert_eq!(response.status(), 200);
    let chunks = read_until(response, 150).await;
    assert!(chunks.iter().all(|chunk| chunk["usage"]["prompt_tokens"] == 10), "usage on every chunk");

    let rows = server.rows(2).await;
    let row = rows.iter().find(|row| row.status == 499).unwrap_or_else(|| panic!("no cancelled row in {rows:?}"));
    assert_eq!(row.finish_reason, "cancelled");
    assert!((150..=200).contains(&row.completion_tokens), "{row:?}");
    assert_eq!(row.prompt_tokens, 10);
    let cost = (10.0 + 2.0 * row.completion_tokens as f64) / 1e6;
    assert!(row.cost > 0.0 && (row.cost - cost).abs() < 1e-12, "{row:?}");

    let booked: f64 = rows.iter().map(|row| row.cost).sum();
    let spent = wait_for_spend(&server, &key_id, booked).await;
    assert!((spent - booked).abs() < 1e-12, "the budget moved by {spent}, the ledger booked {booked}");

    let after = remaining_tokens(&completion(&server, &key, &probe).await);
    // Between the probes: the probe's completion, the stream's prompt and completion, the
    // second probe's prompt; minus what the bucket refilled (1200 a minute) meanwhile.
    let taken = 1 + 10 + row.completion_tokens as i64 + 3;
    let refilled = (started.elapsed().as_secs_f64() * 20.0).ceil() as i64;
    let consumed = before - after;
    assert!(consumed <= taken + 1 && consumed >= taken - refilled - 1, "TPM moved by {consumed}, booked {taken}");
    server.close().await;
}

#[tokio::test]
async fn twenty_concurrent_requests_on_a_budget_for_two_let_at_most_two_through() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    // A token prompt and ignore_eos: the hold (5 prompt + 20 completion tokens) is the cost.
    let body = json!({"model": MODEL, "prompt": [5, 6, 7, 8, 9], "max_tokens": 20, "ignore_eos": true});
    let one = (5.0 + 20.0 * 2.0) / 1e6;
    let budget = 2.5 * one;
    let (_, key) = create_key(&server, json!({"alias": "two", "team": "t", "max_budget": budget})).await;
    let requests = (0..20).map(|_| completion(&server, &key, &body));
    let responses = futures_util::future::join_all(requests).await;
    let mut statuses = Vec::new();
    for response in responses {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status != 200 {
            assert_eq!((status, body["error"]["code"].as_str()), (429, Some("budget_exceeded")), "{body}");
        }
        statuses.push(status);
    }
    let served = statuses.iter().filter(|&&status| status == 200).count();
    assert!((1..=2).contains(&served), "{served} of 20 served on a budget for two: {statuses:?}");
    let rows = server.rows(20).await;
    let spent: f64 = rows.iter().map(|row| row.cost).sum();
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(rows.iter().filter(|row| row.status == 429).all(|row| row.cost == 0.0));
    server.close().await;
}

#[tokio::test]
async fn continuous_usage_stats_put_the_running_usage_on_every_chunk() {
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config())).await;
    let (_, key) = create_key(&server, json!({"alias": "running", "team": "t"})).await;
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
                      "ignore_eos": true, "stream": true,
                      "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    let response =
        server.request(reqwest::Method::POST, "/v1/chat/completions", Some(&key)).json(&body).send().await.unwrap();
    let chunks = common::chunks(&common::sse_data(&response.text().await.unwrap()));
    let counts: Vec<u64> = chunks.iter().map(|chunk| chunk["usage"]["completion_tokens"].as_u64().unwrap()).collect();
    assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]), "{counts:?}");
    assert_eq!(counts.last(), Some(&8));
    assert!(chunks.iter().all(|chunk| chunk["usage"]["cost"].as_f64().is_some()), "the running cost too");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "still closed by the usage chunk");
    server.close().await;
}
