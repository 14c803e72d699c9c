//! kill -9 under load: the ledger stays consistent, every admitted request has its row
//! after the restart (the spool), and requests cut off are marked interrupted.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{spawn_serve, user_messages, wait_ready, MODEL};
use sconce_gateway::ledger::{RowState, UsageRecord};
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
        "[gateway]\nenabled = true\nauth = \"off\"\nadmin_key_env = {CRASH_ADMIN_ENV:?}\ndata_dir = {:?}\n\
         ledger_batch_interval_ms = {BATCH_INTERVAL_MS}\n",
        dir.path().to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    std::env::set_var(CRASH_ADMIN_ENV, CRASH_ADMIN); // reads of /v1/usage need it
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

    let all = ledger_rows(dir.path()).await;
    let rows: Vec<&UsageRecord> = all.iter().filter(|row| row.state == RowState::Done).collect();
    assert!(rows.len() >= surely_written, "lost more than one batch: {} rows, {surely_written} due", rows.len());
    assert!(rows.len() <= completed.len() + 8, "{} rows for {} responses", rows.len(), completed.len());
    assert!(rows.iter().all(|row| row.status == 200 && row.completion_tokens == 4 && row.prompt_tokens > 0));

    // A restart replays the spool: every response the clients got has its row, and the
    // requests cut off (at most one per worker) are interrupted.
    let serve = spawn_serve(MODEL, &config, &[]);
    wait_ready(&client, &serve.base).await;
    let rows = ledger_rows(dir.path()).await;
    let done = rows.iter().filter(|row| row.state == RowState::Done && row.status == 200).count();
    let interrupted = rows.iter().filter(|row| row.state == RowState::Interrupted).count();
    assert!(done >= completed.len(), "{done} completed rows for {} responses", completed.len());
    assert_eq!(done + interrupted, rows.len(), "rows still admitted after the restart");
    assert!(interrupted <= 8, "{interrupted} interrupted rows for 8 workers");
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 4, "ignore_eos": true});
    let response = client.post(format!("{}/v1/chat/completions", serve.base)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let usage = client.get(format!("{}/v1/usage", serve.base)).bearer_auth(CRASH_ADMIN).send().await.unwrap();
    let usage: serde_json::Value = usage.json().await.unwrap();
    assert_eq!(usage["data"][0]["requests"].as_u64(), Some(rows.len() as u64 + 1));
}

async fn ledger_rows(data_dir: &std::path::Path) -> Vec<UsageRecord> {
    let url = format!("sqlite://{}", data_dir.join("sconce.db").display());
    let store = sconce_gateway::store::Store::open(&url).await.unwrap();
    let rows = store.usage(0, i64::MAX, None).await.unwrap();
    store.close().await;
    rows
}

/// Read by the server through `admin_key_env`; only the test below sets it.
const CRASH_ADMIN_ENV: &str = "SCONCE_TEST_CRASH_ADMIN_KEY";
const CRASH_ADMIN: &str = "sk-admin-crash";
const STREAMS: usize = 16;

/// Streams one long completion until the server dies; returns whether it saw `[DONE]`.
async fn stream_until_killed(client: reqwest::Client, base: String, id: String) -> bool {
    let body = json!({"model": MODEL, "messages": user_messages("hi"), "max_tokens": 400, "ignore_eos": true,
                      "stream": true});
    let request = client.post(format!("{base}/v1/chat/completions")).bearer_auth(CRASH_ADMIN);
    let Ok(mut response) = request.header("x-request-id", id).json(&body).send().await else {
        return false;
    };
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    while let Ok(Some(bytes)) = response.chunk().await {
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text.contains("[DONE]")
}

/// The rows of this test's streams, by request id.
async fn stream_rows(data_dir: &std::path::Path) -> HashMap<String, UsageRecord> {
    let rows = ledger_rows(data_dir).await.into_iter().filter(|row| row.request_id.starts_with("crash-"));
    rows.map(|row| (row.request_id.clone(), row)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_16_streams_leaves_16_rows_marked_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let toml = format!(
        "[gateway]\nenabled = true\nadmin_key_env = {CRASH_ADMIN_ENV:?}\ndata_dir = {:?}\nledger_batch_interval_ms = 50\n",
        dir.path().to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    std::env::set_var(CRASH_ADMIN_ENV, CRASH_ADMIN);
    let client = reqwest::Client::new();
    // One sequence at a time: the 16 streams stay in flight (running or queued) for seconds.
    let mut serve = spawn_serve(MODEL, &config, &["--max-num-seqs", "1"]);
    wait_ready(&client, &serve.base).await;
    let streams: Vec<_> = (0..STREAMS)
        .map(|i| tokio::spawn(stream_until_killed(client.clone(), serve.base.clone(), format!("crash-{i:02}"))))
        .collect();
    // Each flush tick writes the rows of the requests in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let rows = stream_rows(dir.path()).await;
        if rows.len() == STREAMS {
            break rows;
        }
        assert!(Instant::now() < deadline, "only {} of {STREAMS} streams reached the ledger", rows.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();
    let mut finished = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        if stream.await.unwrap() {
            finished.push(format!("crash-{i:02}"));
        }
    }
    assert!(finished.len() < STREAMS / 2, "the streams ended before the kill: {finished:?}");

    let serve = spawn_serve(MODEL, &config, &["--max-num-seqs", "1"]);
    wait_ready(&client, &serve.base).await;
    let after = stream_rows(dir.path()).await;
    assert_eq!(after.len(), STREAMS, "one row per admitted stream");
    for (id, row) in &after {
        let known = &before[id];
        assert!(row.prompt_tokens >= known.prompt_tokens && row.completion_tokens >= known.completion_tokens, "{id}");
        match row.state {
            RowState::Interrupted => {
                assert_eq!(row.finish_reason, "interrupted");
                assert!(!finished.contains(id), "{id} finished but is marked interrupted");
            }
            RowState::Done => assert_eq!(row.status, 200, "{id}"),
            RowState::Admitted => panic!("{id} is still admitted after the restart"),
        }
    }
    let interrupted = after.values().filter(|row| row.state == RowState::Interrupted).count();
    assert!(interrupted >= STREAMS / 2, "only {interrupted} rows interrupted");
    drop(serve);
}
