//! Issue #10 "One request path", part 1: the gateway's stages (guardrails, cache, routing)
//! apply to `/v1/completions` as they do to chat, and the gateway on and off answer the same
//! bytes apart from ids and timestamps. Request ids and tracing: `one_path_ids.rs`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;
#[path = "one_path/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_envelope, user_messages};
use harness::{chat, completion, text_of, Problems, Server, ADMIN, MODEL};
use serde_json::{json, Value};

/// A closed loopback port as an upstream URL: every attempt at it is a connect error.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/v1")
}

/// The `[gateway]` sections of `config/examples/gateway.toml`, the primary on a closed port.
fn example_gateway(dir: &Path) -> String {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/examples/gateway.toml");
    let example = std::fs::read_to_string(example).unwrap();
    let gateway = &example[example.find("[gateway]").expect("a [gateway] section")..];
    assert!(gateway.contains("http://127.0.0.1:9/v1") && gateway.contains(&format!("model = \"{MODEL}\"")));
    let gateway = gateway.replace("http://127.0.0.1:9/v1", &closed_port_url());
    gateway.replacen("[gateway]\n", &format!("[gateway]\ndata_dir = {}\n", json!(dir)), 1)
}

// 1. The gateway's stages apply to /v1/completions as they do to chat.

#[tokio::test]
async fn completions_with_a_card_number_in_the_prompt_are_refused_by_the_input_guardrail() {
    let server = Server::start(example_gateway, &[]).await;
    let card = "My card is 4111 1111 1111 1111, charge it.";
    let refused_chat = server.post("/v1/chat/completions", Some(ADMIN), &chat(card, false), &[]).await;
    assert_eq!(refused_chat.status, 400, "control: chat is refused today: {}", refused_chat.text);
    let mut problems = Problems::default();
    for stream in [false, true] {
        let reply = server.post("/v1/completions", Some(ADMIN), &completion(card, stream), &[]).await;
        problems
            .check(reply.status == 400, || format!("stream {stream}: {} instead of 400: {}", reply.status, reply.text));
        if reply.status == 400 {
            let body = reply.json();
            assert_eq!(assert_envelope(&body)["code"], "content_policy_violation", "{body}");
        }
    }
    problems.assert_none();
}

#[tokio::test]
async fn an_email_address_in_completions_output_is_masked_streamed_and_not() {
    let server = Server::start(example_gateway, &[]).await;
    // The tiny model writes random tokens, so the email reaches the output through `echo`:
    // the input policy only blocks CREDIT_CARD, the output policy masks EMAIL_ADDRESS.
    let mut problems = Problems::default();
    for (stream, address) in [(false, "alice@example.com"), (true, "bob.smith@example.org")] {
        let prompt = format!("Write to {address} today.");
        let mut request = completion(&prompt, stream);
        request["echo"] = json!(true);
        let reply = server.post("/v1/completions", Some(ADMIN), &request, &[]).await;
        let text = if stream {
            reply.chunks().iter().map(text_of).collect::<String>()
        } else {
            assert_eq!(reply.status, 200, "{}", reply.text);
            text_of(&reply.json())
        };
        let masked = !text.contains(address) && text.starts_with("Write to <EMAIL_ADDRESS> today.");
        problems.check(masked, || format!("stream {stream}: not masked: {text:?}"));
    }
    problems.assert_none();
}

#[tokio::test]
async fn a_repeated_deterministic_completion_is_a_cache_hit_with_the_same_text() {
    let server = Server::start(example_gateway, &[]).await;
    let mut request = completion("Tell me a story.", false);
    request["max_tokens"] = json!(8);
    let first = server.post("/v1/completions", Some(ADMIN), &request, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-sconce-cache").as_deref(), Some("miss"), "the first completion goes to the cache");
    // The entry may be written just after the reply: retry for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let second = loop {
        let again = server.post("/v1/completions", Some(ADMIN), &request, &[]).await;
        if again.header("x-sconce-cache").as_deref() == Some("hit") || Instant::now() > deadline {
            break again;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(second.header("x-sconce-cache").as_deref(), Some("hit"));
    assert_eq!(text_of(&second.json()), text_of(&first.json()));
}

/// The value of the series `name{…}` whose labels include every one of `labels`.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let line = metrics.lines().find(|line| {
        line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{'))
            && labels.iter().all(|label| line.split_once('}').unwrap().0.contains(label))
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn a_completion_for_the_chat_group_fails_over_from_the_closed_primary_to_local() {
    let server = Server::start(example_gateway, &[]).await;
    let mut request = completion("Hello there", false);
    request["model"] = json!("chat");
    let reply = server.post("/v1/completions", Some(ADMIN), &request, &[]).await;
    assert_eq!(reply.status, 200, "the group `chat` must route completions: {}", reply.text);
    assert_eq!(reply.header("x-sconce-deployment").as_deref(), Some("local"));
    let metrics = server.metrics().await;
    let requests = "sconce:deployment_requests_total";
    let failed = series(&metrics, requests, &["deployment=\"primary\"", "outcome=\"failure\""]);
    let served = series(&metrics, requests, &["deployment=\"local\"", "outcome=\"success\""]);
    assert!(failed.is_some_and(|n| n >= 1.0) && served.is_some_and(|n| n >= 1.0), "{failed:?} {served:?}\n{metrics}");
}

// 3 and 4. The gateway on and off answer the same bytes, apart from ids and timestamps.

fn gateway_off(_: &Path) -> String {
    String::new()
}

/// The gateway with no stage that changes content: the admin key (no limits), no guardrails,
/// cache or routing.
fn gateway_on(dir: &Path) -> String {
    format!("[gateway]\nenabled = true\ndata_dir = {}\n", json!(dir))
}

/// Replaces the value after each `key` (the chars `in_value` accepts) with `with`.
fn replace_values(text: &str, key: &str, in_value: fn(char) -> bool, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        out.push_str(&rest[..at + key.len()]);
        rest = &rest[at + key.len()..];
        rest = rest.trim_start_matches(in_value);
        out.push_str(with);
    }
    out.push_str(rest);
    out
}

/// An SSE or JSON body with `id` and `created` blanked, and `usage.cost` dropped: the
/// gateway's meter writes a cost into the usage, which a server without the gateway has not.
fn normalized(body: &str) -> String {
    let body = replace_values(body, "\"id\":\"", |c| c != '"', "<id>");
    let body = replace_values(&body, "\"created\":", |c| c.is_ascii_digit(), "0");
    let body = replace_values(&body, ",\"cost\":", |c| c.is_ascii_digit() || "+-.eE".contains(c), "");
    body.replace(",\"cost\":", "")
}

/// The gateway off and on; both get the same requests in the same order, so their prefix caches agree.
async fn servers_on_and_off() -> (Server, Server) {
    let off = Server::start(gateway_off, &[]).await;
    let on = Server::start(gateway_on, &[]).await;
    (off, on)
}

fn seeded(path: &str, stream: bool, include_usage: bool) -> Value {
    let mut request = json!({"model": MODEL, "max_tokens": 12, "ignore_eos": true, "temperature": 1.0,
        "seed": 1234, "stream": stream});
    if path == "/v1/completions" {
        request["prompt"] = json!("Once upon a time");
    } else {
        request["messages"] = user_messages("Tell me a story.");
    }
    if include_usage {
        request["stream_options"] = json!({"include_usage": true});
    }
    request
}

async fn streams_match_on_and_off(path: &str) {
    let (off, on) = servers_on_and_off().await;
    for include_usage in [false, true] {
        let request = seeded(path, true, include_usage);
        let mut streams = Vec::new();
        for (mode, server) in [("off", &off), ("on", &on)] {
            let reply = server.post(path, Some(ADMIN), &request, &[]).await;
            let chunks = reply.chunks();
            let usage_at: Vec<usize> = (0..chunks.len()).filter(|&i| chunks[i]["usage"].is_object()).collect();
            let last = chunks.len() - 1;
            let expected = if include_usage { vec![last] } else { vec![] };
            assert_eq!(usage_at, expected, "gateway {mode}, include_usage {include_usage}: usage chunks at");
            if include_usage {
                assert_eq!(chunks[last]["choices"], json!([]), "gateway {mode}: the usage chunk has no choices");
            }
            let again = normalized(&server.post(path, Some(ADMIN), &request, &[]).await.text);
            assert_eq!(again, normalized(&reply.text), "control: a seeded stream repeats with the gateway {mode}");
            streams.push(again);
        }
        let (off_lines, on_lines): (Vec<&str>, Vec<&str>) =
            (streams[0].lines().collect(), streams[1].lines().collect());
        assert_eq!(on_lines, off_lines, "{path} include_usage {include_usage}: gateway on vs off");
        assert_eq!(streams[1], streams[0], "{path} include_usage {include_usage}: line endings");
        assert_eq!(off_lines.iter().rev().find(|l| !l.is_empty()), Some(&"data: [DONE]"));
    }
}

#[tokio::test]
async fn streamed_chat_is_byte_identical_with_the_gateway_on_and_off() {
    streams_match_on_and_off("/v1/chat/completions").await;
}

#[tokio::test]
async fn streamed_completions_are_byte_identical_with_the_gateway_on_and_off() {
    streams_match_on_and_off("/v1/completions").await;
}

#[tokio::test]
async fn full_chat_and_completion_replies_are_identical_with_the_gateway_on_and_off() {
    let (off, on) = servers_on_and_off().await;
    for (path, prefix) in [("/v1/chat/completions", "chatcmpl-"), ("/v1/completions", "cmpl-")] {
        let request = seeded(path, false, false);
        let mut replies = Vec::new();
        for (mode, server) in [("off", &off), ("on", &on)] {
            let reply = server.post(path, Some(ADMIN), &request, &[]).await;
            assert_eq!(reply.status, 200, "gateway {mode}: {}", reply.text);
            assert!(reply.json()["id"].as_str().unwrap().starts_with(prefix), "gateway {mode}: {}", reply.text);
            assert!(reply.json()["usage"]["completion_tokens"] == 12, "gateway {mode}: {}", reply.text);
            let body: Value = serde_json::from_str(&normalized(&reply.text)).unwrap();
            replies.push((body, reply.header("content-type")));
        }
        assert_eq!(replies[1], replies[0], "{path}: gateway on vs off");
    }
}
