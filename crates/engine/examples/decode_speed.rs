//! Quick batch-N decode speed check: `cargo run --release -p sconce-engine --example decode_speed -- [dtype] [concurrency]`.
use std::time::Instant;

use sconce_engine::{launch, ByteSize, EngineConfig, GenerateRequest, LoadOptions, SamplingParams, WeightDtype};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dtype =
        args.get(1).map_or(Ok(WeightDtype::F32), |name| <WeightDtype as clap::ValueEnum>::from_str(name, true))?;
    let concurrency: usize = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(1);
    let load = LoadOptions { dtype: Some(dtype), ..LoadOptions::default() };
    let config = EngineConfig {
        kv_cache_memory: Some(ByteSize(512 << 20)),
        enable_prefix_caching: false,
        ..EngineConfig::default()
    };
    let (engine, _frontend) = launch(&load, config)?;
    let started = Instant::now();
    let streams: Vec<_> = (0..concurrency)
        .map(|i| {
            let prompt: Vec<u32> = (0..4).map(|t| 200 + ((t * 7 + i * 13) % 40000) as u32).collect();
            let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(128) };
            engine.submit(GenerateRequest { id: format!("r{i}"), prompt, params, priority: 0 })
        })
        .collect::<Result<_, _>>()?;
    let mut total = 0;
    for mut s in streams {
        while let Some(d) = s.blocking_next() {
            total += d.token_ids.len();
            if let Some(t) = d.timings {
                eprintln!("ttft {:?} decode {:?}", t.time_to_first_token, t.decode);
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{dtype:?} c={concurrency}: {total} tokens in {secs:.2}s = {:.1} tok/s", total as f64 / secs);
    engine.shutdown();
    Ok(())
}
