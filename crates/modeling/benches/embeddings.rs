//! Embeddings per second of all-MiniLM-L6-v2 on the CPU: 256 inputs of 32 and of 256
//! tokens, in batches of 1 and of 32 (the encoder alone, no HTTP).
//! Run: `cargo bench -p sconce-modeling --bench embeddings`.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use sconce_modeling::{load_embedding_model, Device, FetchOptions};

const INPUTS: usize = 256;

/// `[CLS]`, `len - 2` ordinary word-piece ids, `[SEP]`.
fn input(len: usize, seed: usize) -> Vec<u32> {
    let body = (0..len - 2).map(|i| 2000 + ((seed * 7919 + i * 104_729) % 20_000) as u32);
    std::iter::once(101).chain(body).chain(std::iter::once(102)).collect()
}

fn main() {
    let options = FetchOptions { quiet: true, ..FetchOptions::default() };
    let model = load_embedding_model("all-minilm-l6-v2", &Device::Cpu, &options).unwrap();
    println!("| tokens per input | batch | embeddings/s | seconds for {INPUTS} |");
    println!("|---|---|---|---|");
    for len in [32, 256] {
        let inputs: Vec<Vec<u32>> = (0..INPUTS).map(|seed| input(len, seed)).collect();
        model.encoder.embed(&inputs[..4]).unwrap();
        for batch in [1, 32] {
            let started = Instant::now();
            for chunk in inputs.chunks(batch) {
                model.encoder.embed(chunk).unwrap();
            }
            let seconds = started.elapsed().as_secs_f64();
            println!("| {len} | {batch} | {:.1} | {seconds:.2} |", INPUTS as f64 / seconds);
        }
    }
}
