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
    let n = 50;
    let time = || -> Result<f64, candle_core::Error> {
        let t = Instant::now();
        for _ in 0..n {
            model.decoder.forward(&ids, &pos, &attn, None)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
    };
    let pool = rayon::ThreadPoolBuilder::new().build()?;
    let unfused = pool.install(time)?;
    model.decoder.set_fused(true);
    let time_fused = || -> Result<f64, candle_core::Error> {
        let t = Instant::now();
        for _ in 0..n {
            model.decoder.forward(&ids, &pos, &attn, None)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
    };
    let fused = pool.install(time_fused)?;
    println!("{unfused:.2} ms per forward with candle ops, {fused:.2} ms with the fused ops");
    Ok(())
}
