//! Every error path answers with its status and the OpenAI error envelope.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{assert_envelope, user_messages, TestServer, MODEL};
use serde_json::{json, Value};

async fn raw(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = server
        .client
        .request(method, server.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn routing_and_body_errors_use_the_envelope() {
    let server = TestServer::start_with(|config| config.server.max_request_body_bytes.0 = 4096).await;
    let (status, body) = server.get_json("/v1/nowhere").await;
    assert_eq!(status, 404);
    assert_eq!(assert_envelope(&body)["code"], "not_found");

    let (status, body) = server.get_json("/v1/chat/completions").await;
    assert_eq!(status, 405);
    assert_eq!(assert_envelope(&body)["code"], "method_not_allowed");

    let huge = json!({"messages": user_messages(&"x".repeat(8192))}).to_string().into_bytes();
    let (status, body) = raw(&server, reqwest::Method::POST, "/v1/chat/completions", "application/json", huge).await;
    assert_eq!(status, 413);
    assert!(assert_envelope(&body)["message"].as_str().unwrap().contains("4096"));

    let form = b"prompt=hello".to_vec();
    let (status, body) =
        raw(&server, reqwest::Method::POST, "/v1/completions", "application/x-www-form-urlencoded", form).await;
    assert_eq!(status, 415);
    assert_envelope(&body);

    let broken = b"{\"prompt\": \"unterminated".to_vec();
    let (status, body) = raw(&server, reqwest::Method::POST, "/v1/completions", "application/json", broken).await;
    assert_eq!(status, 400);
    assert_eq!(assert_envelope(&body)["type"], "invalid_request_error");

    let wrong_type = br#"{"prompt": "hi", "max_tokens": "many"}"#.to_vec();
    let (status, body) = raw(&server, reqwest::Method::POST, "/v1/completions", "application/json", wrong_type).await;
    assert_eq!(status, 400);
    assert_envelope(&body);
}

#[tokio::test]
async fn context_length_exceeded_gives_the_numbers() {
    let server = TestServer::start().await;
    let (_, card) = server.get_json(&format!("/v1/models/{MODEL}")).await;
    let max_model_len = card["max_model_len"].as_u64().unwrap();
    let request = json!({"messages": user_messages("hello"), "max_tokens": max_model_len + 100});
    let (status, body) = server.post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, 400);
    let error = assert_envelope(&body);
    assert_eq!(error["code"], "context_length_exceeded");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&max_model_len.to_string()), "{message}");
    assert!(message.contains(&(max_model_len + 100).to_string()), "{message}");

    let long_prompt = "word ".repeat(max_model_len as usize * 2);
    let (status, body) = server.post_json("/v1/completions", &json!({"prompt": long_prompt})).await;
    assert_eq!(status, 400);
    assert_eq!(assert_envelope(&body)["code"], "context_length_exceeded");
}

#[tokio::test]
async fn unknown_models_are_404_model_not_found() {
    let server = TestServer::start().await;
    for (path, body) in [
        ("/v1/chat/completions", json!({"model": "gpt-4o", "messages": user_messages("hi")})),
        ("/v1/completions", json!({"model": "gpt-4o", "prompt": "hi"})),
        ("/tokenize", json!({"model": "gpt-4o", "prompt": "hi"})),
    ] {
        let (status, reply) = server.post_json(path, &body).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(assert_envelope(&reply)["code"], "model_not_found");
    }
    let (status, reply) = server.get_json("/v1/models/gpt-4o").await;
    assert_eq!(status, 404);
    assert_eq!(assert_envelope(&reply)["code"], "model_not_found");
}

#[tokio::test]
async fn unsupported_and_invalid_fields_are_400_with_the_param() {
    let server = TestServer::start().await;
    let messages = user_messages("hi");
    let cases = [
        (json!({"messages": messages, "response_format": {"type": "xml"}}), "response_format"),
        (json!({"messages": messages, "tools": [{"type": "function", "function": {"name": "bad name"}}]}), "tools"),
        (json!({"messages": messages, "tool_choice": "required"}), "tool_choice"),
        (json!({"messages": messages, "n": 2, "best_of": 3}), "best_of"),
        (json!({"messages": messages, "temperature": -0.5}), "temperature"),
        (json!({"messages": messages, "top_logprobs": 50, "logprobs": true}), "top_logprobs"),
        (json!({"messages": messages, "logit_bias": {"not-a-token": 1}}), "logit_bias"),
        (json!({"messages": messages, "stream_options": {"include_usage": true}}), "stream_options"),
        (json!({"messages": []}), "messages"),
    ];
    for (body, param) in cases {
        let (status, reply) = server.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{param}: {reply}");
        assert_eq!(assert_envelope(&reply)["param"], param, "{reply}");
    }
    let (status, reply) = server.post_json("/v1/completions", &json!({"prompt": [], "max_tokens": 1})).await;
    assert_eq!(status, 400);
    assert_envelope(&reply);
    let (status, reply) = server.post_json("/v1/completions", &json!({"prompt": "x", "logprobs": 21})).await;
    assert_eq!(status, 400);
    assert_eq!(assert_envelope(&reply)["param"], "logprobs");
}

#[tokio::test]
async fn overload_is_429_with_retry_after() {
    let server = TestServer::start_with(|config| {
        config.engine.max_num_seqs = 1;
        config.engine.max_waiting_requests = 1;
    })
    .await;
    let mut tasks = Vec::new();
    for client in 0..8 {
        let body = json!({"prompt": format!("busy {client}"), "max_tokens": 200, "ignore_eos": true});
        let (http, url) = (server.client.clone(), server.url("/v1/completions"));
        tasks.push(tokio::spawn(async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), retry_after, response.json::<Value>().await.unwrap())
        }));
    }
    let mut refused = 0;
    for task in tasks {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            200 => assert_eq!(body["usage"]["completion_tokens"], 200),
            429 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(assert_envelope(&body)["code"], "overloaded");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(refused >= 1, "8 simultaneous requests over a queue of 1 must overload");
}

#[tokio::test]
async fn before_the_model_loads_only_liveness_succeeds() {
    let server = TestServer::start_unloaded().await;
    assert_eq!(server.get_json("/health").await.0, 200);
    let (status, body) = server.get_json("/ready").await;
    assert_eq!(status, 503);
    assert_envelope(&body);
    let (status, body) = server.post_json("/v1/completions", &json!({"prompt": "hi"})).await;
    assert_eq!(status, 503);
    assert_envelope(&body);
    let (status, body) = server.get_json("/v1/models").await;
    assert_eq!(status, 503);
    assert_envelope(&body);
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
}
