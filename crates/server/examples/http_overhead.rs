//! What the HTTP layer adds to time to first token.
//!
//! Runs the same streamed completions twice, at concurrency 1 and 16: straight into the
//! engine (submit → first delta), and over HTTP on loopback (send → first SSE chunk).
//! `logprobs: 0` makes every token produce a chunk, so both clocks stop on the first token.
//!
//! cargo run --release -p sconce-server --example http_overhead -- [MODEL] [REQUESTS]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use sconce_server::backend::{Backend, GenerateRequest, SamplingParams};
use sconce_server::config::{ByteSize, Config};
use sconce_server::{server, AppState};
use serde_json::json;
use tokio::net::TcpListener;

const PROMPT: &str = "Measure the time to the first token of this prompt, please.";
const MAX_TOKENS: usize = 4;

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[rank]
}

async fn engine_ttft(backend: Backend, prompt: Vec<u32>, id: String) -> Duration {
    let params = SamplingParams { logprobs: Some(0), ignore_eos: true, ..SamplingParams::greedy(MAX_TOKENS) };
    let started = Instant::now();
    let mut stream = backend.submit(GenerateRequest { id, prompt, params, priority: 0 }).unwrap();
    stream.next().await.unwrap();
    let first = started.elapsed();
    while stream.next().await.is_some() {}
    first
}

async fn http_ttfb(client: reqwest::Client, url: String) -> Duration {
    let body = json!({"prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": true,
        "logprobs": 0, "stream": true});
    let started = Instant::now();
    let mut response = client.post(url).json(&body).send().await.unwrap();
    response.chunk().await.unwrap().unwrap();
    let first = started.elapsed();
    while response.chunk().await.unwrap().is_some() {}
    first
}

/// Runs `requests` measurements, `concurrency` at a time.
async fn measure<F, Fut>(requests: usize, concurrency: usize, one: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Duration> + Send + 'static,
{
    let mut samples = Vec::with_capacity(requests);
    for wave in 0..requests.div_ceil(concurrency) {
        let tasks: Vec<_> = (0..concurrency).map(|slot| tokio::spawn(one(wave * concurrency + slot))).collect();
        for task in tasks {
            samples.push(task.await.unwrap());
        }
    }
    samples
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let default_model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-llama");
    let model = args.next().unwrap_or_else(|| default_model.to_string());
    let requests: usize = args.next().map_or(200, |n| n.parse().unwrap());
    let mut config = Config::default();
    config.model.name = model.clone();
    config.engine.kv_cache_memory = Some(ByteSize(256 << 20));
    let state = AppState::new(server::settings(&config));
    let backend = Backend::launch(&config).await.unwrap();
    state.set_backend(backend.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/completions", listener.local_addr().unwrap());
    tokio::spawn(server::serve(listener, state, std::future::pending()));
    let prompt = backend.encode_text(PROMPT, true).unwrap();
    let client = reqwest::Client::new();

    println!("model: {model}, {requests} requests per row, {MAX_TOKENS} tokens each\n");
    println!("| concurrency | engine TTFT p50 | HTTP first chunk p50 | added p50 | engine p90 | HTTP p90 |");
    println!("|---|---|---|---|---|---|");
    for concurrency in [1, 16] {
        measure(concurrency * 2, concurrency, |_| http_ttfb(client.clone(), url.clone())).await; // warm-up
        let mut engine = measure(requests, concurrency, |i| {
            engine_ttft(backend.clone(), prompt.clone(), format!("bench-{concurrency}-{i}"))
        })
        .await;
        let mut http = measure(requests, concurrency, |_| http_ttfb(client.clone(), url.clone())).await;
        let (engine_p50, http_p50) = (percentile(&mut engine, 0.5), percentile(&mut http, 0.5));
        println!(
            "| {concurrency} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            ms(engine_p50),
            ms(http_p50),
            ms(http_p50) - ms(engine_p50),
            ms(percentile(&mut engine, 0.9)),
            ms(percentile(&mut http, 0.9)),
        );
    }
}
