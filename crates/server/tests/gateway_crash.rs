//! kill -9 under load: the ledger stays consistent and loses at most one batch interval.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{spawn_serve, user_messages, wait_ready, MODEL};
use serde_json::json;

const BATCH_INTERVAL_MS: u64 = 200;

/// Sends requests in `workers` loops until the server dies; returns completion instants.
async fn load(client: reqwest::Client, base: String, workers: usize) -> Arc<Mutex<Vec<Instant>>> {
    let done = Arc::new(Mutex::new(Vec::new()));
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4, "ignore_eos": true});
    for _ in 0..workers {
        let (client, base, body, done) = (client.clone(), base.clone(), body.clone(), done.clone());
        tokio::spawn(async move {
            while let Ok(response) = client.post(format!("{base}/v1/chat/completions")).json(&body).send().await {
                if response.status() == 200 && response.bytes().await.is_ok() {
                    done.lock().unwrap().push(Instant::now());
                }
            }
        });
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_at_most_one_batch_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let toml = format!(
        "[gateway]\nenabled = true\nauth = \"off\"\ndata_dir = {:?}\nledger_batch_interval_ms = {BATCH_INTERVAL_MS}\n",
        dir.path().to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    let client = reqwest::Client::new();
    let mut serve = spawn_serve(MODEL, &config, &[]);
    wait_ready(&client, &serve.base).await;
    let done = load(client.clone(), serve.base.clone(), 8).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serve.child.kill().unwrap(); // SIGKILL
    let killed = Instant::now();
    serve.child.wait().unwrap();
    let completed = done.lock().unwrap().clone();
    assert!(completed.len() > 10, "too little load: {}", completed.len());
    let bound = Duration::from_millis(BATCH_INTERVAL_MS + 150);
    let surely_written = completed.iter().filter(|at| killed.duration_since(**at) > bound).count();

    let url = format!("sqlite://{}", dir.path().join("sconce.db").display());
    let store = sconce_gateway::store::Store::open(&url).await.unwrap();
    let rows = store.usage(0, i64::MAX, None).await.unwrap();
    store.close().await;
    assert!(rows.len() >= surely_written, "lost more than one batch: {} rows, {surely_written} due", rows.len());
    assert!(rows.len() <= completed.len() + 8, "{} rows for {} responses", rows.len(), completed.len());
    assert!(rows.iter().all(|row| row.status == 200 && row.completion_tokens == 4 && row.prompt_tokens > 0));

    // A restart opens the same ledger and keeps appending.
    let serve = spawn_serve(MODEL, &config, &[]);
    wait_ready(&client, &serve.base).await;
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4, "ignore_eos": true});
    let response = client.post(format!("{}/v1/chat/completions", serve.base)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let usage: serde_json::Value =
        client.get(format!("{}/v1/usage", serve.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["data"][0]["requests"].as_u64(), Some(rows.len() as u64 + 1));
}
