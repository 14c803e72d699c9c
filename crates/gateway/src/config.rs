//! The `[gateway]` section of the server config.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::stack::StageName;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Turns the ops layer on (keys, limits, metering, ledger).
    pub enabled: bool,
    /// `required` (default): every request needs a key, and the server refuses to start
    /// without an admin key; `off`: every caller is anonymous (the admin key still works).
    pub auth: AuthMode,
    /// Environment variable holding the admin key; default `SCONCE_ADMIN_KEY`.
    pub admin_key_env: Option<String>,
    /// `/metrics` answers only the admin key.
    pub metrics_auth: bool,
    /// Serves `/metrics` on this address (e.g. `127.0.0.1:9464`) instead of the API port.
    pub metrics_listen: Option<String>,
    /// Adds per-key series (requests and spend by key alias) to `/metrics`.
    pub per_key_metrics: bool,
    /// Ledger and key store location; default: `$SCONCE_DATA_DIR` or the user's data dir.
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` or `postgres://…`; default: `sqlite://<data_dir>/sconce.db`.
    pub database_url: Option<String>,
    /// `redis://…`: shares RPM, TPM and spend counters across replicas.
    pub redis_url: Option<String>,
    /// Each Redis call's response timeout; a call past it counts as Redis being down.
    pub redis_timeout_ms: u64,
    /// With Redis down: `deny` refuses requests that need a budget check (503), `local`
    /// checks this replica's own counters. Rate limits always fall back to local ones.
    pub on_shared_state_error: crate::budget::SharedStateMode,
    /// The completion tokens a budget hold counts per choice for a request without
    /// `max_tokens` (the key's `max_tokens` ceiling, when set, is the request's own).
    pub reserve_max_tokens: u64,
    /// OTLP/HTTP base URL for one span per request (`/v1/traces` is appended); none and no
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variable: no exporter.
    pub otlp_endpoint: Option<String>,
    /// The ledger writer commits at least this often; a kill -9 loses at most this much.
    pub ledger_batch_interval_ms: u64,
    pub ledger_batch_size: usize,
    /// Rows waiting for the writer; beyond it rows are counted as dropped and logged.
    pub ledger_queue_capacity: usize,
    /// Spools admitted and completed requests to a local file before they are committed,
    /// so a kill -9 loses none (replayed at the next start).
    pub ledger_spool: bool,
    /// The spool's path (one `<path>.<n>` per process); default: `ledger.spool` next to the
    /// SQLite file, or in the data dir.
    pub ledger_spool_path: Option<PathBuf>,
    /// Prices per model, in currency units per million tokens.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
    /// Prices models without an entry in `prices` by their share of a GPU-hour.
    pub gpu_hour: Option<GpuHour>,
    /// Team budgets, by team name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, TeamConfig>,
    /// Model groups, deployments, fallbacks and breakers (`[gateway.routing]`).
    #[serde(skip_serializing_if = "is_default")]
    pub routing: crate::route::RoutingConfig,
    /// The response cache (`[gateway.cache]`).
    #[serde(skip_serializing_if = "is_default")]
    pub cache: crate::cache::CacheConfig,
    /// The semantic cache (`[gateway.semantic_cache]`); it needs an embedder.
    #[serde(skip_serializing_if = "is_default")]
    pub semantic_cache: crate::semantic::SemanticCacheConfig,
    /// Guardrail policies (`[[gateway.guardrails.policies]]`).
    #[serde(skip_serializing_if = "is_default")]
    pub guardrails: crate::guard::GuardrailsConfig,
    /// The stages, outermost first; default
    /// `["meter", "prompt", "policy", "guard", "cache", "semantic_cache"]`. The guard and
    /// the caches run only when their sections turn them on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageName>>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let ledger = LedgerConfig::default();
        Self {
            enabled: false,
            auth: AuthMode::Required,
            admin_key_env: None,
            metrics_auth: false,
            metrics_listen: None,
            per_key_metrics: false,
            data_dir: None,
            database_url: None,
            redis_url: None,
            redis_timeout_ms: 250,
            on_shared_state_error: Default::default(),
            reserve_max_tokens: 4096,
            otlp_endpoint: None,
            ledger_batch_interval_ms: ledger.batch_interval_ms,
            ledger_batch_size: ledger.batch_size,
            ledger_queue_capacity: ledger.channel_capacity,
            ledger_spool: true,
            ledger_spool_path: None,
            prices: BTreeMap::new(),
            gpu_hour: None,
            teams: BTreeMap::new(),
            routing: Default::default(),
            cache: Default::default(),
            semantic_cache: Default::default(),
            guardrails: Default::default(),
            stages: None,
        }
    }
}

/// Whether the gateway asks for keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    Required,
    Off,
}

/// Where the admin key is read from when `admin_key_env` is not set.
pub const DEFAULT_ADMIN_KEY_ENV: &str = "SCONCE_ADMIN_KEY";

/// The ledger writer's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    pub batch_interval_ms: u64,
    pub batch_size: usize,
    pub channel_capacity: usize,
    /// The spool (see `ledger::spool`); none: no spool.
    pub spool_path: Option<PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { batch_interval_ms: 200, batch_size: 512, channel_capacity: 16_384, spool_path: None }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuHour {
    pub price: f64,
    /// Tokens (prompt + completion) the GPU serves in an hour at full load.
    pub tokens_per_hour: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeamConfig {
    pub max_budget: Option<f64>,
    pub budget_period: Option<BudgetPeriod>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    #[default]
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" | "daily" => Some(Self::Day),
            "month" | "monthly" => Some(Self::Month),
            _ => None,
        }
    }
}

impl GatewayConfig {
    pub fn ledger(&self) -> LedgerConfig {
        LedgerConfig {
            batch_interval_ms: self.ledger_batch_interval_ms,
            batch_size: self.ledger_batch_size,
            channel_capacity: self.ledger_queue_capacity,
            spool_path: self.ledger_spool.then(|| self.resolved_spool_path()),
        }
    }

    /// `ledger_spool_path`, or `ledger.spool` next to the SQLite file or in the data dir.
    pub fn resolved_spool_path(&self) -> PathBuf {
        if let Some(path) = &self.ledger_spool_path {
            return path.clone();
        }
        let url = self.resolved_database_url();
        let sqlite_file = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
        let sqlite_dir = sqlite_file
            .map(|file| PathBuf::from(file.split('?').next().unwrap_or(file)))
            .filter(|file| !file.starts_with(":memory:"))
            .and_then(|file| file.parent().map(PathBuf::from))
            .filter(|dir| !dir.as_os_str().is_empty());
        sqlite_dir.unwrap_or_else(|| self.resolved_data_dir()).join("ledger.spool")
    }

    /// The stages in their configured order; each at most once.
    pub fn stage_order(&self) -> Result<Vec<StageName>, GatewayError> {
        let order = self.stages.clone().unwrap_or_else(|| StageName::DEFAULT_ORDER.to_vec());
        for (i, name) in order.iter().enumerate() {
            if order[..i].contains(name) {
                return Err(GatewayError::config(format!("stage `{}` is listed twice in `stages`", name.as_str())));
            }
        }
        Ok(order)
    }

    /// The admin key from the configured environment variable, if set and non-empty.
    pub fn admin_key(&self) -> Option<String> {
        std::env::var(self.admin_key_variable()).ok().filter(|key| !key.is_empty())
    }

    /// The environment variable the admin key is read from.
    pub fn admin_key_variable(&self) -> &str {
        self.admin_key_env.as_deref().unwrap_or(DEFAULT_ADMIN_KEY_ENV)
    }

    /// Refuses `auth = "required"` without an admin key, saying how to set one.
    pub fn check_admin_key(&self, admin_key: Option<&str>) -> Result<(), GatewayError> {
        if self.auth == AuthMode::Off || admin_key.is_some_and(|key| !key.is_empty()) {
            return Ok(());
        }
        Err(GatewayError::config(format!(
            "the gateway requires an admin key: export {}=<secret> (the variable `[gateway] admin_key_env` names), \
             or set `[gateway] auth = \"off\"` to serve without keys",
            self.admin_key_variable()
        )))
    }

    pub fn resolved_data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("SCONCE_DATA_DIR").filter(|dir| !dir.is_empty()) {
            return PathBuf::from(dir);
        }
        default_data_dir()
    }

    pub fn resolved_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.resolved_data_dir().join("sconce.db").display()),
        }
    }

    /// Cost of one request in currency units.
    pub fn cost(&self, model: &str, prompt: u64, cached: u64, completion: u64) -> f64 {
        if let Some(price) = self.prices.get(model) {
            let uncached = prompt.saturating_sub(cached) as f64;
            return (uncached * price.input + cached as f64 * price.cached_input + completion as f64 * price.output)
                / 1e6;
        }
        match self.gpu_hour {
            Some(gpu) if gpu.tokens_per_hour > 0.0 => gpu.price * (prompt + completion) as f64 / gpu.tokens_per_hour,
            _ => 0.0,
        }
    }
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/sconce"),
        None => PathBuf::from(".sconce"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_per_million_and_cached_tokens_are_cheaper() {
        let mut config = GatewayConfig::default();
        config.prices.insert("m".into(), Price { input: 1.0, cached_input: 0.5, output: 2.0 });
        let cost = config.cost("m", 1_000_000, 500_000, 1_000_000);
        assert!((cost - 2.75).abs() < 1e-9);
        assert_eq!(config.cost("other", 10, 0, 10), 0.0);
        config.gpu_hour = Some(GpuHour { price: 2.0, tokens_per_hour: 1000.0 });
        assert!((config.cost("other", 250, 0, 250) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_spool_sits_next_to_the_sqlite_file_or_in_the_data_dir() {
        let mut config = GatewayConfig { data_dir: Some("/data".into()), ..GatewayConfig::default() };
        assert_eq!(config.ledger().spool_path, Some(PathBuf::from("/data/ledger.spool")));
        config.database_url = Some("sqlite:///db/x.db?mode=rwc".into());
        assert_eq!(config.resolved_spool_path(), PathBuf::from("/db/ledger.spool"));
        config.database_url = Some("postgres://h/db".into());
        assert_eq!(config.resolved_spool_path(), PathBuf::from("/data/ledger.spool"));
        config.ledger_spool = false;
        assert_eq!(config.ledger().spool_path, None);
    }

    #[test]
    fn stages_keep_the_configured_order_and_unknown_ones_are_refused() {
        let config: GatewayConfig = toml::from_str("stages = [\"cache\", \"meter\"]").expect("valid");
        assert_eq!(config.stage_order().ok(), Some(vec![StageName::Cache, StageName::Meter]));
        assert_eq!(GatewayConfig::default().stage_order().ok(), Some(StageName::DEFAULT_ORDER.to_vec()));
        let twice: GatewayConfig = toml::from_str("stages = [\"meter\", \"meter\"]").expect("valid");
        assert!(twice.stage_order().is_err());
        let unknown = toml::from_str::<GatewayConfig>("stages = [\"meterr\"]").expect_err("unknown stage");
        assert!(unknown.to_string().contains("meterr"), "{unknown}");
    }
}
