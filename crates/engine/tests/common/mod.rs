//! Shared helpers for engine tests on the tiny fixture.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use sconce_engine::{ByteSize, Delta, Engine, EngineConfig, GenerateRequest, SamplingParams};
use sconce_modeling::{load_hf_folder, Decoder, LoadedModel, ReferenceAttention};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama")
}

pub fn tiny_model() -> LoadedModel {
    load_hf_folder(&fixture_dir(), DType::F32, &Device::Cpu).expect("tiny fixture loads")
}

/// Bytes of KV for `blocks` blocks of `block_size` tokens of the tiny model.
pub fn kv_bytes(model: &LoadedModel, blocks: usize, block_size: usize) -> u64 {
    (model.decoder.config().kv_bytes_per_token(4) * block_size * blocks) as u64
}

pub fn greedy(id: &str, prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(max_tokens) };
    GenerateRequest { id: id.into(), prompt, params, priority: 0 }
}

/// Adds a request and returns its delta receiver.
pub fn add(engine: &mut Engine, req: GenerateRequest) -> UnboundedReceiver<Delta> {
    let (tx, rx) = unbounded_channel();
    engine.add_request(req, tx, Instant::now()).expect("request accepted");
    rx
}

/// All deltas received so far.
pub fn drain(rx: &mut UnboundedReceiver<Delta>) -> Vec<Delta> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push(d);
    }
    out
}

pub fn run_to_completion(engine: &mut Engine) {
    let mut guard = 0;
    while engine.has_work() {
        engine.step().expect("step");
        guard += 1;
        assert!(guard < 100_000, "engine did not finish");
    }
}

/// Full recompute without any cache: the logits of the next token after `tokens`.
pub fn reference_logits(decoder: &Decoder, tokens: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let n = tokens.len();
    let ids = Tensor::from_slice(tokens, n, &dev).unwrap();
    let positions = Tensor::from_vec((0..n as u32).collect::<Vec<_>>(), n, &dev).unwrap();
    let rows = Tensor::from_slice(&[n as u32 - 1], 1, &dev).unwrap();
    let attention = ReferenceAttention { seq_lens: vec![n] };
    let logits = decoder.forward(&ids, &positions, &attention, Some(&rows)).unwrap();
    logits.flatten_all().unwrap().to_vec1().unwrap()
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub fn config(blocks_bytes: u64, block_size: usize, budget: usize) -> EngineConfig {
    EngineConfig {
        block_size,
        kv_cache_memory: Some(ByteSize(blocks_bytes)),
        max_num_batched_tokens: budget,
        max_num_seqs: 8,
        capture_logits: true,
        ..EngineConfig::default()
    }
}
