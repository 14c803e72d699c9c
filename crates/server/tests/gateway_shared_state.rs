//! Budgets on Redis: two replicas (two `sconce` processes) hold one budget, and a Redis that
//! stops or hangs mid-run makes budgeted requests fail fast and closed (503), shows on
//! `/ready` and in `/metrics`, and is picked up again when it returns, without a restart.
//! Each test runs its own `redis-server` (so it can stop it), where Redis tests are enabled
//! (`SCONCE_TEST_REDIS_URL`, as `.ci/run` sets).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::gateway::{GatewayServer, TestDb, ADMIN};
use common::services::service_url;
use common::MODEL;
use sconce_gateway::config::{GatewayConfig, Price};
use serde_json::{json, Value};

/// A `redis-server` of this test's own on a free port; killed when dropped.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    /// None (a skip) where Redis tests are not enabled.
    fn start() -> Option<Self> {
        service_url("SCONCE_TEST_REDIS_URL")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Self { port, child: None };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (a hung Redis: connections stay open, nothing answers) or SIGCONT.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.stop();
    }
}

fn priced(mut config: GatewayConfig, redis: &OwnRedis) -> GatewayConfig {
    config.prices.insert(MODEL.into(), Price { input: 1.0, cached_input: 1.0, output: 2.0 });
    config.redis_url = Some(redis.url());
    config
}

async fn create_key(client: &reqwest::Client, base: &str, body: Value) -> String {
    let response = client.post(format!("{base}/admin/keys")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_string()
}

/// A 5-token prompt and 20 tokens with ignore_eos: the hold is the cost, 45e-6.
fn small_completion() -> Value {
    json!({"model": MODEL, "prompt": [5, 6, 7, 8, 9], "max_tokens": 20, "ignore_eos": true})
}

const ONE: f64 = (5.0 + 20.0 * 2.0) / 1e6;

async fn complete(client: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let url = format!("{base}/v1/completions");
    let response = client.post(url).bearer_auth(key).json(&small_completion()).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn ready(client: &reqwest::Client, base: &str) -> Value {
    client.get(format!("{base}/ready")).send().await.unwrap().json().await.unwrap()
}

/// Polls `/ready` (at most `within`) until `shared_state` reads `want`.
async fn wait_shared_state(client: &reqwest::Client, base: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let body = ready(client, base).await;
        if body["shared_state"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "/ready never said shared_state {want}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stopped_redis_denies_budgets_shows_on_ready_and_is_reconnected() {
    let Some(mut redis) = OwnRedis::start() else { return };
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config(), &redis)).await;
    let client = reqwest::Client::new();
    let budgeted = create_key(&client, &server.base, json!({"alias": "b", "team": "t", "max_budget": 1.0})).await;
    let limited = create_key(&client, &server.base, json!({"alias": "l", "team": "t", "rpm_limit": 1000})).await;
    assert_eq!(complete(&client, &server.base, &budgeted).await.0, 200);
    assert_eq!(ready(&client, &server.base).await["shared_state"], "ok");

    redis.stop();
    let started = Instant::now();
    let (status, body) = complete(&client, &server.base, &budgeted).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("shared_state_unavailable")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(3), "denied in {:?}", started.elapsed());
    assert_eq!(complete(&client, &server.base, &limited).await.0, 200, "rate limits fall back to local ones");
    wait_shared_state(&client, &server.base, "unreachable", Duration::from_secs(5)).await;
    assert_eq!(ready(&client, &server.base).await["status"], "ready");
    let metrics = client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sconce_gateway_shared_state_errors_total{op=\"reserve\"}"), "{metrics}");

    redis.restart();
    wait_shared_state(&client, &server.base, "ok", Duration::from_secs(20)).await;
    assert_eq!(complete(&client, &server.base, &budgeted).await.0, 200, "reconnected without a restart");
    server.close().await;
}

#[tokio::test]
async fn a_hung_redis_does_not_hang_requests() {
    let Some(redis) = OwnRedis::start() else { return };
    let db = TestDb::sqlite();
    let server = GatewayServer::start(priced(db.config(), &redis)).await;
    let client = reqwest::Client::new();
    let body = json!({"alias": "h", "team": "t", "max_budget": 1.0, "rpm_limit": 1000, "tpm_limit": 1_000_000});
    let key = create_key(&client, &server.base, body).await;
    assert_eq!(complete(&client, &server.base, &key).await.0, 200);

    redis.signal("-STOP");
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = complete(&client, &server.base, &key).await;
        assert_eq!((status, body["error"]["code"].as_str()), (503, Some("shared_state_unavailable")), "{body}");
        // 250 ms per call (RPM, TPM, then the reservation), far from a hang.
        assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    }
    wait_shared_state(&client, &server.base, "unreachable", Duration::from_secs(5)).await;
    redis.signal("-CONT");
    wait_shared_state(&client, &server.base, "ok", Duration::from_secs(20)).await;
    assert_eq!(complete(&client, &server.base, &key).await.0, 200);
    server.close().await;
}

/// Read by both processes through `admin_key_env`.
const ADMIN_ENV: &str = "SCONCE_TEST_SHARED_STATE_ADMIN_KEY";

fn write_config(dir: &std::path::Path, redis: &OwnRedis) -> std::path::PathBuf {
    let toml = format!(
        "[gateway]\nenabled = true\nadmin_key_env = {}\ndata_dir = {}\nredis_url = {}\n\n\
         [gateway.prices.{MODEL}]\ninput = 1.0\ncached_input = 1.0\noutput = 2.0\n",
        json!(ADMIN_ENV),
        json!(dir),
        json!(redis.url()),
    );
    let path = dir.join("sconce.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test]
async fn two_replicas_sharing_redis_let_at_most_two_of_twenty_through_a_budget_for_two() {
    let Some(redis) = OwnRedis::start() else { return };
    std::env::set_var(ADMIN_ENV, ADMIN);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &redis);
    let client = reqwest::Client::new();
    let a = common::spawn_serve(MODEL, &config, &[]);
    let b = common::spawn_serve(MODEL, &config, &[]);
    common::wait_ready(&client, &a.base).await;
    common::wait_ready(&client, &b.base).await;
    let budget = 2.5 * ONE;
    let key = create_key(&client, &a.base, json!({"alias": "two", "team": "t", "max_budget": budget})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let models = |base: &str| client.get(format!("{base}/v1/models")).bearer_auth(&key).send();
    while models(&b.base).await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "B never loaded the key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = (0..20).map(|i| {
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let (client, key) = (client.clone(), key.clone());
        async move { complete(&client, &base, &key).await }
    });
    let results = futures_util::future::join_all(requests).await;
    let served = results.iter().filter(|(status, _)| *status == 200).count();
    for (status, body) in results.iter().filter(|(status, _)| *status != 200) {
        assert_eq!((*status, body["error"]["code"].as_str()), (429, Some("budget_exceeded")), "{body}");
    }
    assert!((1..=2).contains(&served), "{served} of 20 served across two replicas on a budget for two");
}
