//! Constrained decoding on the random-weight fixture over HTTP: a model that writes noise
//! still gives exactly what the constraint allows, unconstrained neighbours in the batch are
//! untouched, and bad constraints are 400s that name the problem.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_envelope, user_messages, TestServer, MODEL};
use futures_util::future::join_all;
use serde_json::{json, Value};

async fn server() -> TestServer {
    TestServer::start_with(|config| config.engine.fault_inject = Some("step_delay_ms:2".into())).await
}

fn text_of(reply: &Value) -> String {
    let choice = &reply["choices"][0];
    choice["message"]["content"].as_str().or(choice["text"].as_str()).unwrap().to_string()
}

#[tokio::test]
async fn noise_from_a_random_model_still_fits_the_constraint() {
    let server = server().await;
    let regex = json!({"model": MODEL, "prompt": "x", "max_tokens": 40, "temperature": 1.0, "seed": 3,
        "structured_outputs": {"regex": "[a-c]{5}-[0-9]{2}"}});
    for seed in 0..4 {
        let mut body = regex.clone();
        body["seed"] = json!(seed);
        let (status, reply) = server.post_json("/v1/completions", &body).await;
        assert_eq!(status, 200, "{reply}");
        let text = text_of(&reply);
        let fits = text.len() == 8
            && text[..5].chars().all(|c| ('a'..='c').contains(&c))
            && &text[5..6] == "-"
            && text[6..].chars().all(|c| c.is_ascii_digit());
        assert!(fits, "{text:?}");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    }
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["ok", "n"], "additionalProperties": false});
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 40, "temperature": 1.0, "seed": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema, "strict": true}}});
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    let value: Value = serde_json::from_str(&text_of(&reply)).unwrap();
    assert!(value["ok"].is_boolean() && value["n"].as_u64().unwrap() <= 9, "{value}");
}

/// A greedy unconstrained request gives the same text alone and batched with constrained ones.
#[tokio::test]
async fn unconstrained_neighbours_in_the_batch_are_untouched() {
    let server = server().await;
    let plain =
        json!({"model": MODEL, "prompt": "The quick brown", "max_tokens": 24, "temperature": 0, "ignore_eos": true});
    let (_, alone) = server.post_json("/v1/completions", &plain).await;
    let constrained = |i: usize| {
        json!({"model": MODEL, "prompt": format!("p{i}"), "max_tokens": 24, "temperature": 1.0, "seed": i,
            "structured_outputs": {"regex": "[a-z ]{10,30}"}})
    };
    let mut bodies = vec![plain.clone()];
    bodies.extend((0..3).map(constrained));
    let replies = join_all(bodies.iter().map(|body| server.post_json("/v1/completions", body))).await;
    assert_eq!(text_of(&replies[0].1), text_of(&alone), "the unconstrained request changed in a mixed batch");
    for (status, reply) in &replies[1..] {
        assert_eq!(*status, 200, "{reply}");
        let text = text_of(reply);
        assert!(text.chars().all(|c| c.is_ascii_lowercase() || c == ' '), "{text:?}");
    }
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sconce:constraint_mask_seconds_count"), "mask timings are exported");
}

#[tokio::test]
async fn bad_constraints_and_tool_choices_are_named_400s() {
    let server = server().await;
    let chat = |extra: Value| {
        let mut body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let cases = [
        (
            chat(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": 5}}}}),
            ),
            "response_format",
        ),
        (chat(json!({"structured_outputs": {"regex": "[a-"}})), "structured_outputs"),
        (chat(json!({"structured_outputs": {"grammar": "start: missing_rule"}})), "structured_outputs"),
        (chat(json!({"structured_outputs": {"regex": "a", "choice": ["b"]}})), "structured_outputs"),
        (chat(json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "g"}}})), "tool_choice"),
        (chat(json!({"tools": tools, "response_format": {"type": "json_object"}})), "tools"),
        (
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}], "tool_choice": "required"}),
            ),
            "tools",
        ),
    ];
    for (body, param) in cases {
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(assert_envelope(&reply)["param"], param, "{body}: {reply}");
    }
    let huge =
        json!({"model": MODEL, "prompt": "x", "max_tokens": 2, "structured_outputs": {"regex": "a".repeat(70_000)}});
    let (status, reply) = server.post_json("/v1/completions", &huge).await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("at most"), "{reply}");
}

#[tokio::test]
async fn tools_are_refused_where_the_server_turned_them_off() {
    let server =
        TestServer::start_with(|config| config.model.tool_call_parser = sconce_text::tool_calls::ToolCallParser::None)
            .await;
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "tools": tools, "max_tokens": 4});
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "tools");
}

/// The sampler's options work on top of the mask: n choices each follow the grammar, logprobs
/// come back, and a structure cut off by max_tokens ends with `length`.
#[tokio::test]
async fn choices_logprobs_and_a_cut_off_structure() {
    let server = server().await;
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 12, "temperature": 1.0, "seed": 9,
        "n": 3, "logprobs": true, "top_logprobs": 2, "presence_penalty": 1.0, "top_p": 0.9,
        "structured_outputs": {"choice": ["alpha", "beta", "gamma"]}});
    let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for choice in choices {
        let text = choice["message"]["content"].as_str().unwrap();
        assert!(["alpha", "beta", "gamma"].contains(&text), "{text:?}");
        assert!(!choice["logprobs"]["content"].as_array().unwrap().is_empty());
    }
    let cut = json!({"model": MODEL, "prompt": "x", "max_tokens": 3, "structured_outputs": {"regex": "[a-z]{40}"}});
    let (status, reply) = server.post_json("/v1/completions", &cut).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert!(text_of(&reply).chars().all(|c| c.is_ascii_lowercase()));
}
