//! Routing settings as read from the config file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::auto::AutoConfig;
use super::balance::Strategy;
use super::breaker::BreakerConfig;
use super::retry::RetryConfig;

/// One place a model is served: the local engine, or a remote OpenAI-compatible upstream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Unique name, shown in `x-sconce-deployment`.
    pub name: String,
    /// Base URL ending in `/v1`; absent means the local engine.
    pub url: Option<String>,
    pub api_key: Option<String>,
    /// The upstream's (or local engine's) model name; default: the group's name.
    pub model: Option<String>,
    /// Per-attempt timeout in seconds (time to the first token when streaming).
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// The model name clients send.
    pub name: String,
    pub deployments: Vec<DeploymentConfig>,
    /// Overrides the routing-wide `strategy` for this group.
    pub strategy: Option<Strategy>,
    /// Overrides the routing-wide `kv_aware` for this group.
    pub kv_aware: Option<bool>,
}

impl GroupConfig {
    pub fn new(name: impl Into<String>, deployments: Vec<DeploymentConfig>) -> Self {
        Self { name: name.into(), deployments, ..Self::default() }
    }

    pub fn strategy(&self, routing: &RoutingConfig) -> Strategy {
        self.strategy.unwrap_or(routing.strategy)
    }

    pub fn kv_aware(&self, routing: &RoutingConfig) -> bool {
        self.kv_aware.unwrap_or(routing.kv_aware)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    pub strategy: Strategy,
    /// Weigh Sconce upstreams by their `/metrics` queue and KV-cache use.
    pub kv_aware: bool,
    /// How often a KV-aware group's remote deployments' `/metrics` are read, in ms.
    pub metrics_poll_ms: u64,
    /// Default per-attempt timeout in seconds.
    pub timeout_secs: f64,
    pub connect_timeout_secs: f64,
    /// Alias to group name.
    pub aliases: BTreeMap<String, String>,
    pub groups: Vec<GroupConfig>,
    /// Group to the groups tried next after generic failures.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub context_window_fallbacks: BTreeMap<String, Vec<String>>,
    pub content_policy_fallbacks: BTreeMap<String, Vec<String>>,
    /// Answer this text (finish_reason `stop`) when every deployment failed.
    pub static_fallback: Option<String>,
    pub retry: RetryConfig,
    pub breaker: BreakerConfig,
    pub auto: AutoConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            kv_aware: false,
            metrics_poll_ms: 1000,
            timeout_secs: 120.0,
            connect_timeout_secs: 2.0,
            aliases: BTreeMap::new(),
            groups: Vec::new(),
            fallbacks: BTreeMap::new(),
            context_window_fallbacks: BTreeMap::new(),
            content_policy_fallbacks: BTreeMap::new(),
            static_fallback: None,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            auto: AutoConfig::default(),
        }
    }
}
