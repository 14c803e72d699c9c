//! Issue #11 "Fail closed", tenant safety, over real HTTP against the spawned `sconce` binary:
//! auth is explicit (no admin key: no start; an empty key table opens nothing), reads are
//! scoped to the caller, a key's model list holds for a missing `model`, `auto` and
//! `x-sconce-tier`, `priority` is a privilege, a zero RPM refuses instead of panicking, and
//! `/metrics` has bounded labels and can be closed or moved.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "one_path/harness.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{header_value, Server, ADMIN, MODEL};
use serde_json::{json, Value};

fn gateway(extra: &'static str) -> impl FnOnce(&Path) -> String {
    move |dir| format!("[gateway]\nenabled = true\ndata_dir = {}\n{extra}", json!(dir))
}

fn chat_body(model: Option<&str>) -> Value {
    let mut body = json!({"messages": common::user_messages("hi"), "max_tokens": 2});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    body
}

async fn create_key(server: &Server, body: Value) -> String {
    let created = server.post("/admin/keys", Some(ADMIN), &body, &[]).await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.json()["key"].as_str().unwrap().to_string()
}

async fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = server.client.get(server.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_gateway_without_an_admin_key_refuses_to_start_and_says_how_to_set_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sconce.toml");
    std::fs::write(&config, gateway("")(dir.path())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args(["serve", "--port", "0", "--served-model-name", MODEL, "--kv-cache-memory", "16MiB", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(common::tiny_model_dir())
        .env_remove("SCONCE_ADMIN_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway started without an admin key");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("SCONCE_ADMIN_KEY") && stderr.contains("auth = \"off\""), "{stderr}");
}

#[tokio::test]
async fn an_empty_key_table_opens_nothing_and_the_admin_key_may_generate() {
    let server = Server::start(gateway(""), &[]).await;
    assert_eq!(server.post("/v1/chat/completions", None, &chat_body(Some(MODEL)), &[]).await.status, 401);
    assert_eq!(server.post("/v1/completions", Some("sk-guess"), &json!({"prompt": "hi"}), &[]).await.status, 401);
    assert_eq!(get(&server, "/v1/usage", None).await.0, 401);
    let admin = server.post("/v1/chat/completions", Some(ADMIN), &chat_body(Some(MODEL)), &[]).await;
    assert_eq!(admin.status, 200, "{}", admin.text);
}

#[tokio::test]
async fn with_auth_off_usage_is_not_everyones_to_read() {
    let server = Server::start(gateway("auth = \"off\"\nledger_batch_interval_ms = 20\n"), &[]).await;
    let anonymous = server.post("/v1/chat/completions", None, &chat_body(Some(MODEL)), &[]).await;
    assert_eq!(anonymous.status, 200, "auth off serves anyone: {}", anonymous.text);
    server.ledger_ids(1).await;
    let (status, body) = get(&server, "/v1/usage", None).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(&server, "/v1/usage?group_by=key", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert!(body.contains("anonymous"), "the admin still reads everything: {body}");
}

#[tokio::test]
async fn a_key_reads_its_own_usage_and_no_keys_or_prompts() {
    let server = Server::start(gateway("ledger_batch_interval_ms = 20\n"), &[]).await;
    let alice = create_key(&server, json!({"alias": "alice", "team": "a"})).await;
    let bob = create_key(&server, json!({"alias": "bob", "team": "b"})).await;
    for key in [&alice, &bob] {
        let reply = server.post("/v1/chat/completions", Some(key), &chat_body(Some(MODEL)), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    server.ledger_ids(2).await;
    let groups = |body: &str| -> Vec<String> {
        let report: Value = serde_json::from_str(body).unwrap();
        report["data"].as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap().to_string()).collect()
    };
    let (status, body) = get(&server, "/v1/usage?group_by=key", Some(&alice)).await;
    assert_eq!((status, groups(&body)), (200, vec!["alice".to_string()]));
    let (_, body) = get(&server, "/v1/usage?group_by=team", Some(&bob)).await;
    assert_eq!(groups(&body), vec!["b".to_string()]);
    let (_, body) = get(&server, "/v1/usage?group_by=key", Some(ADMIN)).await;
    assert_eq!(groups(&body).len(), 2, "{body}");
    for path in ["/admin/keys", "/admin/prompts", "/admin/prompts/any"] {
        assert_eq!(get(&server, path, Some(&alice)).await.0, 403, "{path}");
    }
    let revoke = server.client.delete(server.url("/admin/keys/bob")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(revoke.status(), 403);
}

/// Two groups over the local engine and `auto` tiers over them: `fast` is `small`, `quality` is `big`.
const TWO_GROUPS: &str = "\
[gateway.routing.auto.tiers]\nfast = \"small\"\nquality = \"big\"\n\
[[gateway.routing.groups]]\nname = \"small\"\n[[gateway.routing.groups.deployments]]\nname = \"s\"\nmodel = \"smollm2-135m-instruct\"\n\
[[gateway.routing.groups]]\nname = \"big\"\n[[gateway.routing.groups.deployments]]\nname = \"b\"\nmodel = \"smollm2-135m-instruct\"\n";

#[tokio::test]
async fn a_key_limited_to_one_model_cannot_reach_another_by_omission_auto_or_tier() {
    let server = Server::start(gateway(TWO_GROUPS), &[]).await;
    let key = create_key(&server, json!({"alias": "small", "team": "t", "models": ["small", "auto"]})).await;
    let post = |model: Option<&'static str>, tier: Option<&'static str>| {
        let headers: Vec<_> = tier.map(|tier| ("x-sconce-tier", header_value(tier))).into_iter().collect();
        let (server, key) = (&server, key.clone());
        async move { server.post("/v1/chat/completions", Some(&key), &chat_body(model), &headers).await }
    };
    let small = post(Some("small"), None).await;
    assert_eq!((small.status, small.header("x-sconce-model").as_deref()), (200, Some("small")), "{}", small.text);
    let fast = post(Some("auto"), Some("fast")).await;
    assert_eq!((fast.status, fast.header("x-sconce-model").as_deref()), (200, Some("small")), "{}", fast.text);
    let mut problems = harness::Problems::default();
    for (case, model, tier) in
        [("big", Some("big"), None), ("no model", None, None), ("tier", Some("auto"), Some("quality"))]
    {
        let reply = post(model, tier).await;
        problems.check(reply.status == 403, || format!("{case}: {} {}", reply.status, reply.text));
        if reply.status == 403 {
            assert_eq!(common::assert_envelope(&reply.json())["param"], "model", "{case}");
        }
    }
    problems.assert_none();
    let admin = server.post("/v1/chat/completions", Some(ADMIN), &chat_body(None), &[]).await;
    assert_eq!((admin.status, admin.header("x-sconce-model").as_deref()), (200, Some("big")), "the default group");
}

#[tokio::test]
async fn without_routing_a_missing_model_is_the_served_one_and_is_checked() {
    let server = Server::start(gateway(""), &[]).await;
    let other = create_key(&server, json!({"alias": "other", "team": "t", "models": ["another-model"]})).await;
    let served = create_key(&server, json!({"alias": "served", "team": "t", "models": [MODEL]})).await;
    let refused = server.post("/v1/completions", Some(&other), &json!({"prompt": "hi", "max_tokens": 2}), &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let allowed = server.post("/v1/completions", Some(&served), &json!({"prompt": "hi", "max_tokens": 2}), &[]).await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
}

/// Finishes `first` and `second` (sent 20 and 70 ms after it) behind a long request on one
/// sequence slot; true when `second` finished first, i.e. jumped the queue. Steps are slowed
/// (`SLOW_STEPS`) so the long request is still running when both have queued.
async fn jumps_the_queue(server: &Server, key: &str, priority: i32) -> bool {
    let long = json!({"prompt": "a", "max_tokens": 450, "ignore_eos": true, "temperature": 0});
    let short = |priority: i32| json!({"prompt": "b", "max_tokens": 40, "ignore_eos": true, "priority": priority});
    let finish = |key: String, body: Value| async move {
        let reply = server.post("/v1/completions", Some(&key), &body, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        Instant::now()
    };
    let blocker = finish(key.to_string(), long);
    let first = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        finish(key.to_string(), short(0)).await
    };
    let second = async {
        tokio::time::sleep(Duration::from_millis(70)).await;
        let sent = Instant::now();
        (sent, finish(key.to_string(), short(priority)).await)
    };
    let (blocked_until, first_done, (second_sent, second_done)) = tokio::join!(blocker, first, second);
    assert!(blocked_until > second_sent, "the long request ended before the others queued: too fast to tell");
    second_done < first_done
}

/// 2 ms per engine step: the 450-token request takes at least 0.9 s (the test-only fault hook).
const SLOW_STEPS: (&str, &str) = ("SCONCE_FAULT_INJECT", "step_delay_ms:2");

#[tokio::test]
async fn priority_is_a_privilege_that_keys_do_not_have_by_default() {
    let engine = "[engine]\nmax_num_seqs = 1\n";
    let server = Server::start(|dir| format!("{engine}{}", gateway("")(dir)), &[SLOW_STEPS]).await;
    assert!(jumps_the_queue(&server, ADMIN, -10).await, "control: the admin's priority is honoured");
    let key = create_key(&server, json!({"alias": "plain", "team": "t"})).await;
    assert!(!jumps_the_queue(&server, &key, i32::MIN).await, "a default key jumped the queue");
}

#[tokio::test]
async fn a_zero_rate_limit_refuses_instead_of_panicking() {
    let server = Server::start(gateway(""), &[]).await;
    for limit in ["rpm_limit", "tpm_limit"] {
        let key = create_key(&server, json!({"alias": limit, "team": "t", limit: 0})).await;
        let reply = server.post("/v1/chat/completions", Some(&key), &chat_body(Some(MODEL)), &[]).await;
        assert_eq!(reply.status, 429, "{limit}: {}", reply.text);
        assert_eq!(common::assert_envelope(&reply.json())["code"], "rate_limit_exceeded");
    }
    assert_eq!(get(&server, "/health", None).await.0, 200);
}

#[tokio::test]
async fn a_clients_model_name_never_becomes_a_label_and_per_key_series_are_opt_in() {
    let server = Server::start(gateway(""), &[]).await;
    let key = create_key(&server, json!({"alias": "labels", "team": "t"})).await;
    let bogus = "bogus-model-8d1f3c";
    let missing = server.post("/v1/chat/completions", Some(&key), &chat_body(Some(bogus)), &[]).await;
    assert_eq!(missing.status, 404, "{}", missing.text);
    assert_eq!(server.post("/v1/chat/completions", Some(&key), &chat_body(Some(MODEL)), &[]).await.status, 200);
    let metrics = server.metrics().await;
    assert!(!metrics.contains(bogus), "{metrics}");
    assert!(metrics.contains("sconce_gateway_requests_total{model=\"other\",status=\"4xx\"} 1"), "{metrics}");
    assert!(metrics.contains(&format!("sconce_gateway_requests_total{{model=\"{MODEL}\",status=\"200\"}} 1")));
    assert!(!metrics.contains("key=\"labels\""), "no key alias without per_key_metrics: {metrics}");
    let per_key = Server::start(gateway("per_key_metrics = true\n"), &[]).await;
    let key = create_key(&per_key, json!({"alias": "labels", "team": "t"})).await;
    assert_eq!(per_key.post("/v1/chat/completions", Some(&key), &chat_body(Some(MODEL)), &[]).await.status, 200);
    let metrics = per_key.metrics().await;
    assert!(metrics.contains("sconce_gateway_key_requests_total{key=\"labels\",status=\"200\"} 1"), "{metrics}");
}

#[tokio::test]
async fn metrics_auth_refuses_anonymous_scrapes_and_metrics_listen_moves_them() {
    let server = Server::start(gateway("metrics_auth = true\n"), &[]).await;
    let key = create_key(&server, json!({"alias": "k", "team": "t"})).await;
    assert_eq!(get(&server, "/metrics", None).await.0, 401);
    assert_eq!(get(&server, "/metrics", Some(&key)).await.0, 403);
    let (status, text) = get(&server, "/metrics", Some(ADMIN)).await;
    assert!(status == 200 && text.contains("sconce_gateway_overhead_seconds"), "{status}: {text}");
    assert_eq!(get(&server, "/health", None).await.0, 200, "probes stay open");

    let moved = Server::start(gateway("metrics_listen = \"127.0.0.1:0\"\n"), &[]).await;
    assert_eq!(get(&moved, "/metrics", Some(ADMIN)).await.0, 404, "not on the API port");
    let log = moved.log();
    let address = log.split("metrics on ").nth(1).and_then(|rest| rest.split_whitespace().next());
    let address = address.unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let scrape = moved.client.get(address).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.unwrap().contains("sconce_gateway_overhead_seconds"));
}

#[test]
fn the_keys_cli_takes_the_new_limits() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sconce.toml");
    std::fs::write(&config, gateway("")(dir.path())).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args(["keys", "--config"])
        .arg(&config)
        .args(["create", "--alias", "cli", "--team", "t", "--max-n", "2", "--max-priority", "-3"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((key["max_n"].as_u64(), key["max_priority"].as_i64()), (Some(2), Some(-3)));
}
