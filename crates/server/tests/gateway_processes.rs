//! Two `sconce` server processes on one database and one Redis enforce one rate limit and
//! one budget per key: what one process admits counts against the other.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::services::service_url;
use common::MODEL;
use sconce_gateway::budget::period_start;
use sconce_gateway::config::BudgetPeriod;
use sconce_gateway::redis_store::RedisStore;
use serde_json::{json, Value};

/// Read by both processes through `admin_key_env`; this file holds one test, so setting it
/// races nothing.
const ADMIN_ENV: &str = "SCONCE_TEST_PROCESSES_ADMIN_KEY";
const ADMIN: &str = "sk-admin-processes";

/// One config for both processes: the gateway with auth, a shared SQLite data dir, Redis
/// and a price table under which the budget key's budget holds one request, not two.
fn write_config(dir: &std::path::Path, redis_url: &str) -> std::path::PathBuf {
    let toml = format!(
        "[gateway]\nenabled = true\nadmin_key_env = {}\ndata_dir = {}\nredis_url = {}\n\n\
         [gateway.prices.{MODEL}]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n",
        json!(ADMIN_ENV),
        json!(dir),
        json!(redis_url),
    );
    let path = dir.join("sconce.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn create_key(client: &reqwest::Client, base: &str, body: Value) -> (String, String) {
    let response = client.post(format!("{base}/admin/keys")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (body["id"].as_str().unwrap().to_string(), body["key"].as_str().unwrap().to_string())
}

/// Waits (at most 10 s) until `base` accepts `key`: the other process reloads keys every 2 s.
/// `/v1/models` authenticates without touching limits or budgets.
async fn wait_for_key(client: &reqwest::Client, base: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.get(format!("{base}/v1/models")).bearer_auth(key).send().await.unwrap();
        if response.status() == 200 {
            return;
        }
        assert_eq!(response.status(), 401);
        assert!(Instant::now() < deadline, "{base} never accepted the key created on the other process");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn chat(client: &reqwest::Client, base: &str, key: &str) -> reqwest::Response {
    let body = json!({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    client.post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(&body).send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// Waits (at most 5 s) until the key's spend today is in Redis (it is booked after the reply).
async fn wait_for_spend(redis_url: &str, key_id: &str) {
    let redis = RedisStore::connect(redis_url).await.unwrap();
    let today = period_start(BudgetPeriod::Day, sconce_gateway::usage::unix_now());
    let counter = format!("sconce:spend:key:{key_id}:day:{today}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.spend(&counter).await.unwrap() <= 0.0 {
        assert!(Instant::now() < deadline, "the spend never reached Redis at {counter}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_server_processes_sharing_redis_enforce_one_limit_and_one_budget() {
    let Some(redis_url) = service_url("SCONCE_TEST_REDIS_URL") else { return };
    std::env::set_var(ADMIN_ENV, ADMIN);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &redis_url);
    let client = reqwest::Client::new();
    let a = common::spawn_serve(MODEL, &config, &[]);
    common::wait_ready(&client, &a.base).await;
    let b = common::spawn_serve(MODEL, &config, &[]);
    common::wait_ready(&client, &b.base).await;
    assert_ne!(a.child.id(), b.child.id());

    // Redis counters are named after key ids, which are random per key, so reruns against
    // the same Redis never share a bucket; the team is fresh too, for its spend counter.
    let team = format!("processes-{}", uuid::Uuid::new_v4().simple());
    let (_, rpm) = create_key(&client, &a.base, json!({"alias": "rpm", "team": team, "rpm_limit": 5})).await;
    let (budget_id, budget) =
        create_key(&client, &a.base, json!({"alias": "budget", "team": team, "max_budget": 0.000_03})).await;
    wait_for_key(&client, &b.base, &rpm).await;
    wait_for_key(&client, &b.base, &budget).await;

    let mut responses = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        responses.push(chat(&client, base, &rpm).await);
    }
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429], "five requests across both processes, not five each");
    let refused = responses.pop().unwrap();
    assert!(header(&refused, "retry-after").is_some_and(|secs| secs.parse::<u64>().unwrap() >= 1));
    assert_eq!(header(&refused, "x-ratelimit-limit-requests").as_deref(), Some("5"));
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests").as_deref(), Some("0"));
    assert!(header(&refused, "x-ratelimit-reset-requests").is_some_and(|reset| reset.ends_with('s')));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");

    let spent = chat(&client, &a.base, &budget).await;
    assert_eq!(spent.status(), 200);
    // The hold (22-token prompt bound + 2 × 2 output: 26e-6) fits; one spent plus another does not.
    assert!(header(&spent, "x-sconce-cost").unwrap().parse::<f64>().unwrap() > 0.000_004);
    wait_for_spend(&redis_url, &budget_id).await;
    let refused = chat(&client, &b.base, &budget).await;
    assert_eq!(refused.status(), 429, "B never served this key: only the shared spend can refuse it");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
}
