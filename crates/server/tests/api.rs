//! Chat and text completions, models, tokenization and metrics over real HTTP.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{chunks, user_messages, TestServer, MODEL};
use serde_json::{json, Value};

fn usage_counts(usage: &Value) -> (u64, u64, u64) {
    let count = |key: &str| usage[key].as_u64().unwrap_or_else(|| panic!("usage lacks {key}: {usage}"));
    (count("prompt_tokens"), count("completion_tokens"), count("total_tokens"))
}

#[tokio::test]
async fn chat_completion_returns_the_message_and_exact_usage() {
    let server = TestServer::start().await;
    let messages = user_messages("Hello there");
    let body = json!({"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0, "ignore_eos": true});
    let response = server.post("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], MODEL);
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &reply["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert_eq!(choice["finish_reason"], "length");
    let prompt = server.prompt_tokens(&json!({"messages": messages})).await as u64;
    assert_eq!(usage_counts(&reply["usage"]), (prompt, 8, prompt + 8));
    assert!(reply["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() <= prompt);
}

#[tokio::test]
async fn chat_stream_has_the_openai_chunk_shape_and_the_same_usage() {
    let server = TestServer::start().await;
    let request = json!({"model": MODEL, "messages": user_messages("Tell me a story"), "max_tokens": 12,
        "temperature": 0.9, "seed": 7, "ignore_eos": true});
    let (status, full) = server.post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{full}");
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = chunks(&server.stream("/v1/chat/completions", &streamed).await);

    let first = &chunks[0];
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        for key in ["id", "created", "model"] {
            assert_eq!(chunk[key], first[key], "{key} changed between chunks");
        }
    }
    let (last, body) = chunks.split_last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(body.iter().all(|chunk| chunk["usage"].is_null() && chunk.get("usage").is_some()));
    assert_eq!(usage_counts(&last["usage"]), usage_counts(&full["usage"]));

    let content_chunks: Vec<&Value> = body[1..].iter().collect();
    assert!(!content_chunks.is_empty() && content_chunks.len() <= 12);
    let (final_chunk, earlier) = content_chunks.split_last().unwrap();
    assert_eq!(final_chunk["choices"][0]["finish_reason"], "length");
    assert!(earlier.iter().all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    let text: String =
        content_chunks.iter().filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, full["choices"][0]["message"]["content"].as_str().unwrap(), "same seed, same text");
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_field() {
    let server = TestServer::start().await;
    let request = json!({"messages": user_messages("hi"), "max_tokens": 3, "stream": true});
    let chunks = chunks(&server.stream("/v1/chat/completions", &request).await);
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    assert!(chunks.iter().all(|chunk| chunk["choices"].as_array().unwrap().len() == 1));
}

#[tokio::test]
async fn chat_with_n_choices_logprobs_and_content_parts() {
    let server = TestServer::start().await;
    let request = json!({"model": MODEL, "n": 2, "best_of": 2, "max_completion_tokens": 4, "ignore_eos": true,
        "logprobs": true, "top_logprobs": 2, "user": "u1", "some_future_field": [1, 2],
        "messages": [{"role": "developer", "content": "x"},
                     {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]}]});
    let (status, reply) = server.post_json("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{reply}");
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
        let tokens = choice["logprobs"]["content"].as_array().unwrap();
        assert_eq!(tokens.len(), 4);
        assert!(tokens.iter().all(|token| token["top_logprobs"].as_array().unwrap().len() == 2));
        assert!(tokens.iter().all(|token| token["logprob"].as_f64().unwrap() <= 0.0));
    }
    assert_eq!(reply["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn completions_stream_and_non_stream_agree() {
    let server = TestServer::start().await;
    let request = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.7,
        "seed": 11, "ignore_eos": true});
    let (status, full) = server.post_json("/v1/completions", &request).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "text_completion");
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    let prompt = server.prompt_tokens(&json!({"prompt": "Once upon a time"})).await as u64;
    assert_eq!(usage_counts(&full["usage"]), (prompt, 10, prompt + 10));

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = chunks(&server.stream("/v1/completions", &streamed).await);
    let (last, body) = chunks.split_last().unwrap();
    assert_eq!(usage_counts(&last["usage"]), usage_counts(&full["usage"]));
    assert!(body.iter().all(|chunk| chunk["object"] == "text_completion" && chunk["id"] == last["id"]));
    let text: String = body.iter().map(|chunk| chunk["choices"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(text, full["choices"][0]["text"].as_str().unwrap());
    assert_eq!(body.last().unwrap()["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn completions_take_prompt_lists_and_token_ids() {
    let server = TestServer::start().await;
    let request = json!({"prompt": ["first prompt", "second"], "n": 2, "max_tokens": 3, "ignore_eos": true});
    let (status, reply) = server.post_json("/v1/completions", &request).await;
    assert_eq!(status, 200, "{reply}");
    let indexes: Vec<u64> = reply["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
    let first = server.prompt_tokens(&json!({"prompt": "first prompt"})).await as u64;
    let second = server.prompt_tokens(&json!({"prompt": "second"})).await as u64;
    assert_eq!(usage_counts(&reply["usage"]), (first + second, 12, first + second + 12));

    let request = json!({"prompt": [[5, 6, 7, 8], [9, 10]], "max_tokens": 2, "ignore_eos": true});
    let (status, reply) = server.post_json("/v1/completions", &request).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(usage_counts(&reply["usage"]), (6, 4, 10));
}

/// lm-eval scores multiple choice with `echo`, `logprobs` and `max_tokens: 1`.
#[tokio::test]
async fn echo_with_logprobs_scores_the_prompt() {
    let server = TestServer::start().await;
    let prompt = "The capital of France is Paris";
    let request = json!({"prompt": prompt, "echo": true, "logprobs": 1, "max_tokens": 1, "temperature": 0});
    let (status, reply) = server.post_json("/v1/completions", &request).await;
    assert_eq!(status, 200, "{reply}");
    let choice = &reply["choices"][0];
    assert!(choice["text"].as_str().unwrap().starts_with(prompt));
    let logprobs = &choice["logprobs"];
    let prompt_tokens = server.prompt_tokens(&json!({"prompt": prompt})).await;
    let token_logprobs = logprobs["token_logprobs"].as_array().unwrap();
    assert_eq!(token_logprobs.len(), prompt_tokens + 1);
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), prompt_tokens + 1);
    assert!(token_logprobs[0].is_null() && logprobs["top_logprobs"][0].is_null());
    assert!(token_logprobs[1..].iter().all(|value| value.as_f64().is_some_and(|lp| lp <= 0.0)));
    let top = logprobs["top_logprobs"][1].as_object().unwrap();
    assert!(!top.is_empty() && top.len() <= 2);
    let offsets: Vec<u64> = logprobs["text_offset"].as_array().unwrap().iter().map(|o| o.as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|pair| pair[0] <= pair[1]));
}

#[tokio::test]
async fn models_tokenize_and_detokenize() {
    let server = TestServer::start().await;
    let (status, list) = server.get_json("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], MODEL);
    assert_eq!(list["data"][0]["object"], "model");
    let (status, card) = server.get_json(&format!("/v1/models/{MODEL}")).await;
    assert_eq!((status, &card["id"]), (200, &json!(MODEL)));
    assert!(card["max_model_len"].as_u64().unwrap() > 0);

    let (status, tokens) =
        server.post_json("/tokenize", &json!({"prompt": "hello world", "return_token_strs": true})).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["count"], tokens["tokens"].as_array().unwrap().len());
    assert_eq!(tokens["token_strs"].as_array().unwrap().len(), tokens["count"].as_u64().unwrap() as usize);
    let ids = tokens["tokens"].clone();
    let (status, text) = server.post_json("/detokenize", &json!({"model": MODEL, "tokens": ids})).await;
    assert_eq!(status, 200, "{text}");
    assert!(text["prompt"].as_str().unwrap().contains("hello world"));
}

#[tokio::test]
async fn probes_version_and_request_ids() {
    let server = TestServer::start().await;
    assert_eq!(server.get_json("/health").await.0, 200);
    assert_eq!(server.get_json("/ready").await.0, 200);
    let (status, version) = server.get_json("/version").await;
    assert_eq!(status, 200);
    assert!(version["version"].is_string());
    let response = server.client.get(server.url("/health")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

async fn poll_metrics(server: &TestServer, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let response = server.client.get(server.url("/metrics")).send().await.unwrap();
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = response.text().await.unwrap();
        if done(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn metrics_expose_engine_series_with_help_and_model_label() {
    let server = TestServer::start_with(|config| config.metrics.vllm_compat = true).await;
    let request = json!({"prompt": "count me", "max_tokens": 5, "ignore_eos": true});
    assert_eq!(server.post_json("/v1/completions", &request).await.0, 200);
    // Engine counters come from its stats snapshot, refreshed just after the final token.
    let counted = format!("sconce:generation_tokens_total{{model_name=\"{MODEL}\"}} 5");
    let text = poll_metrics(&server, |text| text.contains(&counted)).await;
    for prefix in ["sconce", "vllm"] {
        for name in [
            "num_requests_running",
            "num_requests_waiting",
            "kv_cache_usage_perc",
            "prompt_tokens_total",
            "generation_tokens_total",
            "request_success_total",
            "num_preemptions_total",
            "prefix_cache_queries_total",
            "prefix_cache_hits_total",
            "time_to_first_token_seconds",
            "inter_token_latency_seconds",
            "e2e_request_latency_seconds",
            "request_queue_time_seconds",
            "request_prefill_time_seconds",
            "request_decode_time_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {prefix}:{name} ")), "no HELP for {prefix}:{name}");
        }
        let generated = format!("{prefix}:generation_tokens_total{{model_name=\"{MODEL}\"}} ");
        let line = text.lines().find(|line| line.starts_with(&generated)).expect("generation counter");
        assert!(line[generated.len()..].parse::<f64>().unwrap() >= 5.0, "{line}");
        let success = format!("{prefix}:request_success_total{{finished_reason=\"length\",model_name=\"{MODEL}\"}} 1");
        assert!(text.contains(&success), "{text}");
    }
    let samples = text.lines().filter(|line| !line.starts_with('#'));
    assert!(samples.clone().all(|line| line.contains(&format!("model_name=\"{MODEL}\""))));
}

#[tokio::test]
async fn thirty_two_concurrent_streams_all_finish_with_correct_usage() {
    let server = TestServer::start().await;
    let prompt_of = |client: usize| format!("client number {client} asks a question");
    let mut tasks = Vec::new();
    for client in 0..32 {
        let body = json!({"model": MODEL, "prompt": prompt_of(client), "max_tokens": 6 + client % 5,
            "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
        let (http, url) = (server.client.clone(), server.url("/v1/completions"));
        tasks.push(tokio::spawn(async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            chunks(&common::sse_data(&response.text().await.unwrap()))
        }));
    }
    for (client, task) in tasks.into_iter().enumerate() {
        let chunks = task.await.unwrap();
        let usage = &chunks.last().unwrap()["usage"];
        let prompt = server.prompt_tokens(&json!({"prompt": prompt_of(client)})).await as u64;
        let generated = 6 + client as u64 % 5;
        assert_eq!(usage_counts(usage), (prompt, generated, prompt + generated), "client {client}");
    }
    assert_eq!(server.state.in_flight(), 0);
}
