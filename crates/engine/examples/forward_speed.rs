//! Times one-token decoder forwards on SmolLM2 (no engine): `cargo run --release -p sconce-engine --example forward_speed -- bf16`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use sconce_modeling::{load_model, parse_dtype, FetchOptions, ReferenceAttention};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dtype = parse_dtype(&std::env::args().nth(1).unwrap_or_else(|| "bf16".into()))?;
    let mut model = load_model("smollm2-135m-instruct", dtype, &Device::Cpu, &FetchOptions::default())?;
    let dev = Device::Cpu;
    let ids = Tensor::from_slice(&[1000u32], 1, &dev)?;
    let pos = Tensor::from_slice(&[5u32], 1, &dev)?;
    let attn = ReferenceAttention { seq_lens: vec![1] };
    for _ in 0..3 {
        model.decoder.forward(&ids, &pos, &attn, None)?;
    }
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    let mut timings = Vec::new();
    for fused in [false, true] {
        model.decoder.set_fused(fused);
        let decoder = &model.decoder;
        timings.push(pool.install(|| time_forwards(decoder, &ids, &pos, &attn, 50))?);
    }
    println!("{:.2} ms per forward with candle ops, {:.2} ms with the fused ops", timings[0], timings[1]);
    Ok(())
}

/// Mean milliseconds per forward over `n` forwards.
fn time_forwards(
    decoder: &sconce_modeling::Decoder,
    ids: &Tensor,
    pos: &Tensor,
    attn: &ReferenceAttention,
    n: usize,
) -> candle_core::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        decoder.forward(ids, pos, attn, None)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
}
