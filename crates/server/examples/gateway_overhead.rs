//! What the gateway (auth, limits, budgets, metering, ledger) adds to a chat request.
//!
//! Runs the same non-streamed chat requests against two servers over the same model, one
//! with the gateway off and one with everything on, at concurrency 1 and 32. Prints the
//! end-to-end latency of both and the gateway's own overhead as it reports it in
//! `x-sconce-gateway-overhead-ms` (time in the stages before the engine is called).
//!
//! cargo run --release -p sconce-server --example gateway_overhead -- [MODEL] [REQUESTS]
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use sconce_gateway::config::{GatewayConfig, Price};
use sconce_server::backend::Backend;
use sconce_server::config::{ByteSize, Config};
use sconce_server::{gateway, server, AppState};
use serde_json::json;
use tokio::net::TcpListener;

const ADMIN: &str = "sk-bench-admin";

fn percentile(samples: &mut [f64], fraction: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[rank]
}

async fn start(config: &Config, gateway_config: Option<&GatewayConfig>) -> String {
    let state = AppState::new(server::settings(config));
    if let Some(gateway_config) = gateway_config {
        gateway::install_with_admin(&state, gateway_config, Some(ADMIN.into())).await.unwrap();
    }
    state.set_backend(Backend::launch(config).await.unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(listener, state, std::future::pending()));
    base
}

/// One request: (end-to-end seconds, reported gateway overhead in seconds).
async fn one(client: reqwest::Client, url: String, key: Option<String>) -> (f64, f64) {
    let body = json!({"messages": [{"role": "user", "content": "Say something."}], "max_tokens": 4,
        "temperature": 0, "ignore_eos": true, "user": "bench"});
    let started = Instant::now();
    let mut request = client.post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let overhead = response
        .headers()
        .get("x-sconce-gateway-overhead-ms")
        .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
        .map_or(0.0, |ms| ms / 1e3);
    response.bytes().await.unwrap();
    (started.elapsed().as_secs_f64(), overhead)
}

async fn run(base: &str, key: Option<&str>, requests: usize, concurrency: usize) -> (Vec<f64>, Vec<f64>) {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/chat/completions");
    let (mut e2e, mut overhead) = (Vec::new(), Vec::new());
    for _ in 0..requests.div_ceil(concurrency) {
        let tasks: Vec<_> =
            (0..concurrency).map(|_| tokio::spawn(one(client.clone(), url.clone(), key.map(str::to_string)))).collect();
        for task in tasks {
            let (seconds, gateway) = task.await.unwrap();
            e2e.push(seconds);
            overhead.push(gateway);
        }
    }
    (e2e, overhead)
}

/// This process's CPU time (user + system) in seconds, from /proc (Linux only; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn ms(seconds: f64) -> String {
    format!("{:.3}", seconds * 1e3)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "tests/fixtures/tiny-llama".into());
    let requests: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(256);
    let mut config = Config::default();
    config.model.name = model;
    config.model.served_model_name = Some("bench".into());
    config.engine.kv_cache_memory = Some(ByteSize(256 << 20));
    let dir = tempfile::tempdir().unwrap();
    let mut gateway_config =
        GatewayConfig { enabled: true, data_dir: Some(dir.path().into()), ..GatewayConfig::default() };
    gateway_config.prices.insert("bench".into(), Price { input: 0.1, cached_input: 0.05, output: 0.2 });
    let off = start(&config, None).await;
    let on = start(&config, Some(&gateway_config)).await;
    let key: serde_json::Value = reqwest::Client::new()
        .post(format!("{on}/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"alias": "bench", "team": "bench", "rpm_limit": 1_000_000, "tpm_limit": 100_000_000,
                       "max_budget": 1_000_000.0, "budget_period": "day"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    run(&off, None, 32, 8).await; // warm-up
    run(&on, Some(&key), 32, 8).await;
    println!("| concurrency | off e2e p50 ms | off e2e p99 ms | on e2e p50 ms | on e2e p99 ms | gateway p50 ms | gateway p99 ms | off CPU ms/req | on CPU ms/req |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for concurrency in [1, 32] {
        let (mut off_e2e, mut on_e2e, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
        let (mut off_cpu, mut on_cpu) = (0.0, 0.0);
        // Alternate short rounds so drift on a noisy machine hits both sides alike.
        let round = (concurrency * 4).min(requests);
        for _ in 0..requests.div_ceil(round) {
            let before = cpu_seconds();
            off_e2e.extend(run(&off, None, round, concurrency).await.0);
            let middle = cpu_seconds();
            let (e2e, stages) = run(&on, Some(&key), round, concurrency).await;
            (off_cpu, on_cpu) = (off_cpu + middle - before, on_cpu + cpu_seconds() - middle);
            on_e2e.extend(e2e);
            overhead.extend(stages);
        }
        println!(
            "| {concurrency} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ms(percentile(&mut off_e2e, 0.5)),
            ms(percentile(&mut off_e2e, 0.99)),
            ms(percentile(&mut on_e2e, 0.5)),
            ms(percentile(&mut on_e2e, 0.99)),
            ms(percentile(&mut overhead, 0.5)),
            ms(percentile(&mut overhead, 0.99)),
            ms(off_cpu / off_e2e.len() as f64),
            ms(on_cpu / on_e2e.len() as f64),
        );
    }
}
