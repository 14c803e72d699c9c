//! `sconce bench`: closed-loop throughput of the engine in-process (no HTTP), vLLM-style numbers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rand::{rngs::StdRng, Rng, SeedableRng};
use sconce_engine::{launch, ByteSize, EngineConfig, EngineHandle, GenerateRequest, LoadOptions, SamplingParams};

use crate::config::Overrides;

/// Model and engine flags are those of `serve` (with their `SCONCE_*` variables); the KV cache
/// defaults to 512 MiB here and prefix caching is off.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: Overrides<LoadOptions>,
    #[command(flatten)]
    pub engine: Overrides<EngineConfig>,
    /// Comma-separated concurrency levels.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    pub num_prompts: usize,
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Print one JSON line per level instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Clone)]
struct Sample {
    ttft: Duration,
    tpot: Duration,
    output_tokens: usize,
}

/// The engine settings of a bench run before flags: a 512 MiB KV cache and no prefix cache.
fn bench_engine_defaults() -> EngineConfig {
    EngineConfig {
        kv_cache_memory: Some(ByteSize(512 << 20)),
        // Random prompts share no prefix; keep the cache from helping across levels.
        enable_prefix_caching: false,
        ..EngineConfig::default()
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let load = args.model.over(LoadOptions::default())?;
    let config = args.engine.over(bench_engine_defaults())?;
    let (engine, _frontend) = launch(&load, config)?;
    let vocab = engine.model_info().vocab_size as u32;
    if !args.json {
        println!("| concurrency | requests | output tok/s | TTFT p50 ms | TPOT p50 ms | peak RSS MiB | KV waste % |");
        println!("|---|---|---|---|---|---|---|");
    }
    for &c in &args.concurrency {
        let prompts = random_prompts(args.num_prompts, args.input_len, vocab, c as u64);
        let started = Instant::now();
        let waste = KvWasteProbe::start(engine.clone());
        let samples = run_level(&engine, prompts, c.max(1), args.output_len);
        let elapsed = started.elapsed().as_secs_f64();
        report(&args, c, &samples, elapsed, waste.finish());
    }
    engine.shutdown();
    Ok(())
}

/// Samples KV slot waste (allocated but unfilled slots / allocated slots) while a level runs.
struct KvWasteProbe {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl KvWasteProbe {
    fn start(engine: EngineHandle) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let block_size = engine.model_info().block_size;
        let thread = std::thread::spawn(move || {
            let (mut sum, mut n) = (0.0, 0usize);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let s = engine.stats();
                let slots = (s.kv_blocks_total - s.kv_blocks_free) * block_size;
                if slots > 0 && s.num_waiting == 0 {
                    sum += 1.0 - (s.kv_tokens_held as f64 / slots as f64).min(1.0);
                    n += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if n == 0 {
                0.0
            } else {
                sum / n as f64
            }
        });
        Self { stop, thread }
    }

    /// Mean waste in percent.
    fn finish(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0) * 100.0
    }
}

fn random_prompts(n: usize, len: usize, vocab: u32, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| (0..len).map(|_| rng.random_range(100..vocab)).collect()).collect()
}

/// `concurrency` workers each take the next prompt until none are left.
fn run_level(engine: &EngineHandle, prompts: Vec<Vec<u32>>, concurrency: usize, output_len: usize) -> Vec<Sample> {
    let queue = Arc::new(Mutex::new(prompts.into_iter().enumerate().collect::<Vec<_>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (engine, queue, results) = (engine.clone(), queue.clone(), results.clone());
            std::thread::spawn(move || {
                while let Some((i, prompt)) = pop(&queue) {
                    if let Some(sample) = one_request(&engine, i, prompt, output_len) {
                        if let Ok(mut r) = results.lock() {
                            r.push(sample);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let samples = results.lock().map(|r| r.clone()).unwrap_or_default();
    samples
}

/// Takes the next prompt, releasing the lock at once.
fn pop(queue: &Mutex<Vec<(usize, Vec<u32>)>>) -> Option<(usize, Vec<u32>)> {
    queue.lock().ok().and_then(|mut q| q.pop())
}

fn one_request(engine: &EngineHandle, i: usize, prompt: Vec<u32>, output_len: usize) -> Option<Sample> {
    let params = SamplingParams { ignore_eos: true, ..SamplingParams::greedy(output_len) };
    let started = Instant::now();
    let mut stream = engine.submit(GenerateRequest { id: format!("bench-{i}"), prompt, params, priority: 0 }).ok()?;
    let (mut first, mut count) = (None, 0usize);
    while let Some(delta) = stream.blocking_next() {
        count += delta.token_ids.len();
        first.get_or_insert_with(|| started.elapsed());
    }
    let ttft = first?;
    let decode = started.elapsed().saturating_sub(ttft);
    let tpot = decode / (count.saturating_sub(1).max(1) as u32);
    Some(Sample { ttft, tpot, output_tokens: count })
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Peak resident set (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn report(args: &BenchArgs, concurrency: usize, samples: &[Sample], elapsed: f64, kv_waste_pct: f64) {
    let tokens: usize = samples.iter().map(|s| s.output_tokens).sum();
    let tps = tokens as f64 / elapsed;
    let ttft = median(samples.iter().map(|s| s.ttft).collect());
    let tpot = median(samples.iter().map(|s| s.tpot).collect());
    let rss = peak_rss_mib();
    if args.json {
        println!(
            "{{\"concurrency\":{concurrency},\"requests\":{},\"output_tok_s\":{tps:.2},\"ttft_p50_ms\":{ttft:.2},\"tpot_p50_ms\":{tpot:.2},\"peak_rss_mib\":{rss:.0},\"kv_waste_pct\":{kv_waste_pct:.2}}}",
            samples.len()
        );
    } else {
        println!(
            "| {concurrency} | {} | {tps:.1} | {ttft:.1} | {tpot:.2} | {rss:.0} | {kv_waste_pct:.1} |",
            samples.len()
        );
    }
}
