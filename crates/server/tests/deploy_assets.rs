//! The files in `deploy/` against the real server: every series the Grafana dashboard queries
//! (with every label it groups or filters by) is exported by a running server with the gateway,
//! routing, cache, guardrails and limits configured so that their series appear; every series the
//! server exports is on the dashboard; and the Helm chart uses only flags, environment variables
//! and config keys that `sconce serve` reads.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use common::{tiny_config, MODEL};
use sconce_server::backend::Backend;
use sconce_server::cli::Cli;
use sconce_server::config::Config;
use sconce_server::{gateway, server, AppState};
use serde_json::{json, Value};
use tokio::net::TcpListener;

#[path = "deploy_assets/promql.rs"]
mod promql;

use promql::{dashboard_queries, parse_exposition, promql_refs};

const ADMIN: &str = "sk-admin-deploy";

/// Labels Prometheus adds when it scrapes (target and Kubernetes service discovery labels).
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod", "container", "service", "endpoint"];

/// Series the dashboard may leave out on purpose (none today).
const NOT_ON_DASHBOARD: &[&str] = &[];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The dashboard against a live /metrics

/// A gateway config that makes every gateway series appear: a group whose only deployment is a
/// closed port (failures, a retry, breaker state) falling back to a local group, prices (spend),
/// the response cache and a blocking guardrail. Parsed from TOML, as a user would write it.
fn gateway_config(data_dir: &Path) -> Config {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let toml = format!(
        r#"
[gateway]
enabled = true
data_dir = "{data_dir}"

[gateway.prices."{MODEL}"]
input = 1.0
cached_input = 0.5
output = 2.0

[gateway.routing]
fallbacks = {{ flaky = ["chat"] }}

[gateway.routing.retry]
max_retries = 1
base_delay_ms = 1

[[gateway.routing.groups]]
name = "flaky"
[[gateway.routing.groups.deployments]]
name = "closed"
url = "http://127.0.0.1:{closed}/v1"
model = "{MODEL}"

[[gateway.routing.groups]]
name = "chat"
[[gateway.routing.groups.deployments]]
name = "local"
model = "{MODEL}"

[gateway.cache]
enabled = true

[[gateway.guardrails.policies]]
name = "default"
input = {{ CREDIT_CARD = "block" }}
"#,
        data_dir = data_dir.display()
    );
    Config::from_toml(&toml).unwrap()
}

struct Live {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Live {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { gateway: gateway_config(dir.path()).gateway, ..tiny_config() };
        let state = AppState::new(server::settings(&config));
        gateway::install_with_admin(&state, &config.gateway, Some(ADMIN.into())).await.unwrap();
        state.set_backend(Backend::launch(&config).await.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, state, std::future::pending()));
        Self { base, client: reqwest::Client::new(), _dir: dir }
    }

    async fn create_key(&self, body: Value) -> String {
        let url = format!("{}/admin/keys", self.base);
        let response = self.client.post(url).bearer_auth(ADMIN).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string()
    }

    async fn chat(&self, key: &str, model: &str, content: &str) -> u16 {
        let body = json!({"model": model, "temperature": 0, "max_tokens": 4,
            "messages": [{"role": "user", "content": content}]});
        let url = format!("{}/v1/chat/completions", self.base);
        self.client.post(url).bearer_auth(key).json(&body).send().await.unwrap().status().as_u16()
    }

    async fn metrics(&self) -> String {
        let response = self.client.get(format!("{}/metrics", self.base)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

#[tokio::test]
async fn every_series_on_the_dashboard_is_exported_and_every_exported_series_is_on_it() {
    let dashboard: Value = serde_json::from_str(&read(&deploy_dir().join("grafana/sconce-dashboard.json"))).unwrap();
    let datasource = &dashboard["templating"]["list"][0];
    assert_eq!((datasource["name"].as_str(), datasource["query"].as_str()), (Some("datasource"), Some("prometheus")));

    let live = Live::start().await;
    let key = live.create_key(json!({"alias": "dashboard", "team": "ops"})).await;
    let limited = live.create_key(json!({"alias": "limited", "team": "ops", "rpm_limit": 1})).await;
    // Routing: the closed deployment fails, is retried, and the group falls back to `chat`.
    assert_eq!(live.chat(&key, "flaky", "hello").await, 200);
    // The response cache: a miss, then a hit.
    assert_eq!(live.chat(&key, "chat", "hello again").await, 200);
    assert_eq!(live.chat(&key, "chat", "hello again").await, 200);
    // A guardrail block, and a rate-limit rejection.
    assert_eq!(live.chat(&key, MODEL, "my card is 4111 1111 1111 1111").await, 400);
    assert_eq!(live.chat(&limited, MODEL, "one").await, 200);
    assert_eq!(live.chat(&limited, MODEL, "two").await, 429);
    let scrape = parse_exposition(&live.metrics().await);

    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "the dashboard has only {} queries", queries.len());
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (place, expr, variable_label) in &queries {
        let mut refs = promql_refs(expr);
        refs.labels.extend(variable_label.clone());
        if refs.metrics.is_empty() {
            problems.push(format!("{place}: no metric in `{expr}`"));
        }
        let mut known: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for metric in &refs.metrics {
            match scrape.samples.get(metric) {
                Some(labels) => known.extend(labels.iter().map(String::as_str)),
                None => problems.push(format!("{place}: `{metric}` is not in /metrics (in `{expr}`)")),
            }
            used.insert(metric.clone());
        }
        for label in &refs.labels {
            if !known.contains(label.as_str()) {
                problems.push(format!("{place}: label `{label}` is on none of {:?} (in `{expr}`)", refs.metrics));
            }
        }
    }
    for family in &scrape.families {
        let on_dashboard = ["", "_bucket", "_sum", "_count"].iter().any(|s| used.contains(&format!("{family}{s}")));
        if !on_dashboard && !NOT_ON_DASHBOARD.contains(&family.as_str()) {
            problems.push(format!(
                "`{family}` is exported but not on deploy/grafana/sconce-dashboard.json: add a panel (or list it in NOT_ON_DASHBOARD)"
            ));
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The Helm chart against the CLI and the config types

fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/sconce")
}

/// values.yaml and every ci/*.yaml.
fn values_files() -> Vec<PathBuf> {
    let mut files = vec![chart_dir().join("values.yaml")];
    let mut ci: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci")).unwrap().map(|e| e.unwrap().path()).collect();
    ci.sort();
    files.extend(ci);
    files
}

/// The top-level `config: |` block scalar of a values file, unindented.
fn inline_config(values: &str) -> Option<String> {
    let mut lines = values.lines().skip_while(|line| *line != "config: |").skip(1).peekable();
    lines.peek()?;
    let block: Vec<&str> =
        lines.take_while(|line| line.is_empty() || line.starts_with("  ")).map(|l| l.get(2..).unwrap_or("")).collect();
    Some(block.join("\n"))
}

/// The `key = ` lines of the [gateway] table the chart writes (in `_helpers.tpl`).
fn chart_gateway_keys() -> Vec<String> {
    let helpers = read(&chart_dir().join("templates/_helpers.tpl"));
    let table = helpers.split("[gateway]\n").nth(1).expect("_helpers.tpl writes a [gateway] table");
    let table = &table[..table.find("{{- .Values.config }}").unwrap()];
    table
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(key, _)| key.trim().to_string()))
        .filter(|key| !key.starts_with("{{"))
        .collect()
}

#[test]
fn the_charts_inline_configs_and_gateway_table_are_valid_sconce_configs() {
    let keys = chart_gateway_keys();
    assert!(keys.len() >= 5, "{keys:?}");
    for key in &keys {
        // An inline table is the wrong type for every [gateway] key; serde names unknown keys first.
        let error = Config::from_toml(&format!("[gateway]\n{key} = {{ probe = 1 }}\n")).unwrap_err().to_string();
        assert!(!error.contains("unknown field"), "the chart writes gateway.{key}, which sconce rejects: {error}");
    }
    let head = "[gateway]\nenabled = true\nadmin_key_env = \"SCONCE_ADMIN_KEY\"\n";
    for file in values_files() {
        let config =
            inline_config(&read(&file)).unwrap_or_else(|| panic!("{} has no `config: |` block", file.display()));
        let parsed =
            Config::from_toml(&config).unwrap_or_else(|e| panic!("{}: config is invalid: {e:#}", file.display()));
        // With gateway.enabled the chart's [gateway] table comes first: the block may only add sub-tables.
        let merged = Config::from_toml(&format!("{head}\n{config}"))
            .unwrap_or_else(|e| panic!("{}: config with the chart's [gateway] table: {e:#}", file.display()));
        assert!(merged.gateway.enabled);
        assert_eq!(merged.gateway.routing, parsed.gateway.routing);
    }
    // The test is not vacuous: a wrong key is caught.
    assert!(Config::from_toml("[engine]\nmax_num_sequences = 1\n").is_err());
}

/// `--flag` words in a chart file outside comments: list items (`- --flag`) and quoted strings.
fn flags_in(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let code: Vec<&str> = text.lines().filter(|line| !line.trim_start().starts_with('#')).collect();
    for word in code.join("\n").split(|c: char| c.is_whitespace() || matches!(c, '"' | '[' | ']' | ',')) {
        if let Some(name) = word.strip_prefix("--") {
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                flags.insert(name.trim_end_matches(':').to_string());
            }
        }
    }
    flags
}

/// `- name: VAR` entries of a template that look like Sconce's or the model hub's variables.
fn env_names_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("- name: "))
        .map(|name| name.trim().to_string())
        .filter(|name| name.starts_with("SCONCE_") || name.starts_with("HF_"))
        .collect()
}

#[test]
fn the_chart_passes_only_flags_and_variables_that_sconce_serve_reads() {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let longs: BTreeSet<String> = serve.get_arguments().filter_map(|a| a.get_long()).map(String::from).collect();
    let envs: BTreeSet<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .chain([sconce_modeling::fetch::CACHE_DIR_ENV.to_string(), sconce_modeling::catalog::MODELS_DIR_ENV.into()])
        .collect();
    assert!(longs.contains("drain-timeout") && envs.contains("SCONCE_PORT"), "{longs:?} {envs:?}");

    let deployment = read(&chart_dir().join("templates/deployment.yaml"));
    let mut flags = flags_in(&deployment);
    for file in values_files() {
        flags.extend(flags_in(&read(&file)));
    }
    assert!(flags.len() >= 10, "{flags:?}");
    let unknown: Vec<_> = flags.difference(&longs).collect();
    assert!(unknown.is_empty(), "the chart passes flags `sconce serve` does not take: {unknown:?}");

    let admin_env = "SCONCE_ADMIN_KEY";
    assert!(read(&chart_dir().join("templates/_helpers.tpl")).contains(&format!("admin_key_env = \"{admin_env}\"")));
    let names = env_names_in(&deployment);
    for name in ["SCONCE_DATA_DIR", "SCONCE_CACHE_DIR", admin_env, "HF_HOME", "HF_TOKEN"] {
        assert!(names.contains(name), "deployment.yaml no longer sets {name}: update this test");
    }
    // SCONCE_DATA_DIR (gateway), HF_HOME and HF_TOKEN (hf-hub) are read outside clap.
    let outside_clap = ["SCONCE_DATA_DIR", admin_env, "HF_HOME", "HF_TOKEN"];
    let unknown: Vec<_> = names.iter().filter(|n| !envs.contains(*n) && !outside_clap.contains(&n.as_str())).collect();
    assert!(unknown.is_empty(), "the chart sets variables sconce does not read: {unknown:?}");
    assert!(read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../modeling/src/fetch/hub.rs")).contains("\"HF_TOKEN\""));

    // SCONCE_DATA_DIR is where the gateway's SQLite database goes.
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sconce"))
        .args(["keys", "--config", "/dev/null", "list"])
        .env("SCONCE_DATA_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.path().join("sconce.db").exists(), "SCONCE_DATA_DIR did not place the database");
}

#[test]
fn the_charts_grace_period_covers_the_servers_drain() {
    let values = read(&chart_dir().join("values.yaml"));
    let number = |key: &str| -> u64 {
        let line = values.lines().find(|l| l.trim_start().starts_with(&format!("{key}:"))).unwrap();
        line.split(':').nth(1).unwrap().trim().parse().unwrap()
    };
    let drain = number("drainTimeoutSeconds");
    assert_eq!(drain, sconce_server::config::ServerConfig::default().drain_timeout_secs, "keep the defaults aligned");
    let deployment = read(&chart_dir().join("templates/deployment.yaml"));
    let grace = deployment.lines().find(|l| l.contains("terminationGracePeriodSeconds:")).unwrap();
    assert!(
        grace.contains("add .Values.server.preStopSleepSeconds .Values.server.drainTimeoutSeconds"),
        "the grace period must be preStop + drain + margin: {grace}"
    );
    assert!(deployment.contains("- --drain-timeout\n            - {{ .Values.server.drainTimeoutSeconds | quote }}"));
}
