//! `POST /v1/embeddings` over real HTTP on loopback, all-MiniLM-L6-v2 beside the tiny chat
//! model: the vectors are the encoder's own, in input order, float and base64 alike; usage
//! is exact; every bad input is a 400 envelope; the model is listed with its kind.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_envelope, TestServer, MODEL};
use sconce_modeling::{load_embedding_model, Device, EmbeddingModel, FetchOptions};
use sconce_server::config::{Config, ModelEntry};
use serde_json::{json, Value};

const MINILM: &str = "all-minilm-l6-v2";

fn with_minilm(config: &mut Config) {
    config.models = vec![ModelEntry::embedding(MINILM)];
    config.limits.max_embedding_tokens = 4096;
}

async fn server() -> TestServer {
    TestServer::start_with(with_minilm).await
}

fn encoder() -> EmbeddingModel {
    load_embedding_model(MINILM, &Device::Cpu, &FetchOptions { allow_hub: false, ..FetchOptions::default() }).unwrap()
}

fn direct(model: &EmbeddingModel, text: &str) -> Vec<f32> {
    let tokens = model.tokenizer.encode(text, true).unwrap();
    model.encoder.embed(&[tokens]).unwrap().remove(0)
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Standard base64 to bytes, written here so the test shares nothing with the server.
fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        other => panic!("not base64: {other}"),
    };
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').map(value).collect();
        let word = data.iter().enumerate().fold(0u32, |word, (i, v)| word | (*v as u32) << (18 - 6 * i));
        bytes.extend((0..data.len() - 1).map(|i| (word >> (16 - 8 * i)) as u8));
    }
    bytes
}

fn base64_floats(value: &Value) -> Vec<f32> {
    let bytes = unbase64(value.as_str().unwrap());
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

const TEXTS: [&str; 4] =
    ["The cat sat on the mat.", "ok", "A man is playing a guitar in the park.", "¿Dónde está la estación?"];

#[tokio::test]
async fn vectors_are_the_encoders_in_input_order_with_exact_usage() {
    let server = server().await;
    let model = encoder();
    let (status, body) = server.post_json("/v1/embeddings", &json!({"model": MINILM, "input": TEXTS})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["object"].as_str(), body["model"].as_str()), (Some("list"), Some(MINILM)));
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), TEXTS.len());
    for (index, (item, text)) in data.iter().zip(TEXTS).enumerate() {
        assert_eq!((item["object"].as_str(), item["index"].as_u64()), (Some("embedding"), Some(index as u64)));
        let gap = max_gap(&floats(&item["embedding"]), &direct(&model, text));
        assert!(gap < 1e-5, "{text:?} differs from the encoder by {gap}");
    }
    let tokens: usize = TEXTS.iter().map(|text| model.tokenizer.encode(text, true).unwrap().len()).sum();
    assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(tokens as u64), "{body}");
    assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(tokens as u64));
    assert!(body.get("id").is_none(), "OpenAI's embeddings reply has no id");
}

#[tokio::test]
async fn base64_is_the_same_vectors_and_token_inputs_match_text() {
    let server = server().await;
    let model = encoder();
    let request = |format: &str| json!({"model": MINILM, "input": TEXTS, "encoding_format": format});
    let (_, float) = server.post_json("/v1/embeddings", &request("float")).await;
    let (status, base64) = server.post_json("/v1/embeddings", &request("base64")).await;
    assert_eq!(status, 200, "{base64}");
    for (f, b) in float["data"].as_array().unwrap().iter().zip(base64["data"].as_array().unwrap()) {
        assert_eq!(floats(&f["embedding"]), base64_floats(&b["embedding"]));
    }
    let ids: Vec<Vec<u32>> = TEXTS.iter().map(|text| model.tokenizer.encode(text, true).unwrap()).collect();
    let (status, lists) = server.post_json("/v1/embeddings", &json!({"input": ids})).await;
    assert_eq!(status, 200, "{lists}");
    let (_, one) = server.post_json("/v1/embeddings", &json!({"input": ids[2]})).await;
    for (index, item) in lists["data"].as_array().unwrap().iter().enumerate() {
        assert!(max_gap(&floats(&item["embedding"]), &floats(&float["data"][index]["embedding"])) < 1e-5);
    }
    assert!(max_gap(&floats(&one["data"][0]["embedding"]), &floats(&float["data"][2]["embedding"])) < 1e-5);
    assert_eq!(one["usage"]["prompt_tokens"].as_u64(), Some(ids[2].len() as u64));
}

/// (status, param, message) of a refused request.
async fn refusal(server: &TestServer, body: Value) -> (u16, String, String) {
    let (status, reply) = server.post_json("/v1/embeddings", &body).await;
    let error = assert_envelope(&reply);
    let param = error["param"].as_str().unwrap_or_default().to_string();
    (status, param, error["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn bad_inputs_are_400s_in_the_openai_envelope() {
    let server = server().await;
    let long = "word ".repeat(600);
    let many: Vec<&str> = vec!["a"; 100_000];
    let cases = [
        (json!({"model": MINILM, "input": []}), "input"),
        (json!({"model": MINILM, "input": ""}), "input"),
        (json!({"model": MINILM, "input": ["fine", ""]}), "input"),
        (json!({"model": MINILM, "input": [[101, 102], []]}), "input"),
        (json!({"model": MINILM, "input": many}), "input"),
        (json!({"model": MINILM, "input": [101, 30522, 102]}), "input"),
        (json!({"model": MINILM, "input": "hi", "dimensions": 128}), "dimensions"),
        (json!({"model": MINILM, "input": long}), "input"),
        (json!({"model": MINILM, "input": vec![long.as_str(); 9], "truncate_prompt_tokens": 500}), "input"),
        (json!({"model": MINILM, "input": "hi", "truncate_prompt_tokens": 513}), "truncate_prompt_tokens"),
        (json!({"model": MODEL, "input": "hi"}), "model"),
    ];
    for (body, param) in cases {
        let (status, got, message) = refusal(&server, body.clone()).await;
        assert_eq!(
            (status, got.as_str()),
            (400, param),
            "{message} for {}",
            &body.to_string()[..80.min(body.to_string().len())]
        );
    }
    let (_, _, dimensions) = refusal(&server, json!({"input": "hi", "dimensions": 128})).await;
    assert!(dimensions.contains("does not support `dimensions`"), "{dimensions}");
    let (_, _, too_long) = refusal(&server, json!({"input": long})).await;
    assert!(too_long.contains("512"), "the limit is named: {too_long}");
    let (status, reply) = server.post_json("/v1/embeddings", &json!({"model": "nope", "input": "hi"})).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (404, Some("model_not_found")), "{reply}");
    let (status, reply) = server.post_json("/v1/embeddings", &json!({"input": "hi", "encoding_format": "hex"})).await;
    assert_eq!(status, 400, "{reply}");
    assert_envelope(&reply);
}

#[tokio::test]
async fn truncation_on_request_keeps_the_special_tokens() {
    let server = server().await;
    let long = "word ".repeat(600);
    let body = json!({"input": [long, "short"], "truncate_prompt_tokens": 16});
    let (status, reply) = server.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 200, "{reply}");
    let model = encoder();
    let short = model.tokenizer.encode("short", true).unwrap().len();
    assert_eq!(reply["usage"]["prompt_tokens"].as_u64(), Some(16 + short as u64));
    let mut cut = model.tokenizer.encode(&"word ".repeat(600), true).unwrap()[..15].to_vec();
    cut.push(102);
    let want = model.encoder.embed(&[cut]).unwrap().remove(0);
    assert!(max_gap(&floats(&reply["data"][0]["embedding"]), &want) < 1e-5);
}

#[tokio::test]
async fn models_lists_each_kind_and_metrics_count_embeddings() {
    let server = server().await;
    let (_, models) = server.get_json("/v1/models").await;
    let kind = |id: &str| models["data"].as_array().unwrap().iter().find(|card| card["id"] == id).cloned();
    assert_eq!(kind(MODEL).unwrap()["kind"], "chat", "{models}");
    let minilm = kind(MINILM).unwrap();
    assert_eq!((minilm["kind"].as_str(), minilm["dimensions"].as_u64()), (Some("embedding"), Some(384)));
    assert_eq!(minilm["max_model_len"].as_u64(), Some(512));
    let (status, one) = server.get_json(&format!("/v1/models/{MINILM}")).await;
    assert_eq!((status, one["kind"].as_str()), (200, Some("embedding")), "{one}");
    let chat = json!({"model": MINILM, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let (status, reply) = server.post_json("/v1/chat/completions", &chat).await;
    assert_eq!((status, reply["error"]["param"].as_str()), (400, Some("model")), "{reply}");
    let (status, _) = server.post_json("/v1/embeddings", &json!({"input": ["a b c", "d"]})).await;
    assert_eq!(status, 200);
    let text = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("sconce_embedding_requests_total{model=\"all-minilm-l6-v2\"} 1"), "{text}");
    assert!(text.contains("sconce_embedding_tokens_total{model=\"all-minilm-l6-v2\"} 8"), "{text}");
    assert!(text.contains("sconce_embedding_batch_size_count{model=\"all-minilm-l6-v2\"}"), "{text}");
    assert!(text.contains("sconce_embedding_queue_time_seconds_count{model=\"all-minilm-l6-v2\"} 1"), "{text}");
}

/// The official `openai` Python SDK, where it is installed (skipped otherwise; CI installs it
/// and sets `SCONCE_TEST_REQUIRE_SDK`, so there it never skips).
#[tokio::test]
async fn the_openai_sdk_gets_the_same_vectors_as_float_and_base64() {
    if !common::openai_sdk_installed() {
        return;
    }
    let server = server().await;
    let printed = common::run_sdk_script("openai_embeddings.py", vec![server.base.clone(), MINILM.into()]).await;
    let model = encoder();
    for (vector, text) in printed["vectors"].as_array().unwrap().iter().zip(["The cat sat on the mat.", "ok"]) {
        assert!(max_gap(&floats(vector), &direct(&model, text)) < 1e-5, "{text:?}");
    }
}

/// The batcher has its own thread: chat answers while a long embedding request runs, and a
/// request whose client went away stops taking batches.
#[tokio::test]
async fn a_long_embedding_queue_does_not_stall_chat() {
    let server = TestServer::start_with(|config| {
        with_minilm(config);
        config.limits.max_embedding_tokens = 1 << 20;
    })
    .await;
    let texts: Vec<String> =
        (0..2000).map(|i| format!("sentence {i} about the weather in a town by the sea")).collect();
    let (client, url) = (server.client.clone(), server.url("/v1/embeddings"));
    let long = tokio::spawn(async move { client.post(url).json(&json!({"input": texts})).send().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let (status, reply) = server.post_json("/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{reply}");
    assert!(!long.is_finished(), "the embeddings request ended before chat answered: the test proves nothing");
    long.abort();
    let service = server.state.embeddings().unwrap();
    let model = service.find(None).unwrap().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while model.queued() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(model.queued(), 0, "the abandoned inputs left the queue");
    let (status, _) = server.post_json("/v1/embeddings", &json!({"input": "still here"})).await;
    assert_eq!(status, 200);
}

/// The entry a semantic cache calls: texts in, unit vectors out, the same as over HTTP,
/// with over-long texts cut rather than refused.
#[tokio::test]
async fn the_service_embeds_texts_into_unit_vectors() {
    let server = server().await;
    let service = server.state.embeddings().unwrap();
    let texts = vec!["The cat sat on the mat.".to_string(), "word ".repeat(600)];
    let vectors = service.embed(None, texts).await.unwrap();
    assert_eq!(vectors.len(), 2);
    for vector in &vectors {
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let (_, body) = server.post_json("/v1/embeddings", &json!({"input": "The cat sat on the mat."})).await;
    assert!(max_gap(&vectors[0], &floats(&body["data"][0]["embedding"])) < 1e-6);
}

/// More inputs waiting than `max_queued_inputs` is a 429 `overloaded`, not an unbounded queue.
#[tokio::test]
async fn a_full_queue_refuses_with_429() {
    let server = TestServer::start_with(|config| {
        let mut entry = ModelEntry::embedding(MINILM);
        entry.max_queued_inputs = 4;
        config.models = vec![entry];
    })
    .await;
    let (status, reply) = server.post_json("/v1/embeddings", &json!({"input": ["a", "b", "c", "d", "e"]})).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (429, Some("overloaded")), "{reply}");
    let (status, _) = server.post_json("/v1/embeddings", &json!({"input": ["a", "b", "c", "d"]})).await;
    assert_eq!(status, 200);
}
