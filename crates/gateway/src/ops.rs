//! [`Gateway`]: opens the store, loads keys, starts the ledger and assembles the stage
//! stack over an upstream, in the configured order.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sconce_protocol::ApiError;

use crate::api::Upstream;
use crate::auth::Auth;
use crate::budget::SpendBook;
use crate::cache::{CacheMetrics, ResponseCache};
use crate::config::{BudgetPeriod, GatewayConfig};
use crate::context::Principal;
use crate::error::GatewayError;
use crate::guard::metrics::GuardMetrics;
use crate::guard::{GuardStage, Guardrails};
use crate::keys::{ApiKey, KeyCache, NewKey};
use crate::ledger::Ledger;
use crate::limits::RateLimits;
use crate::meter::MeterState;
use crate::metrics::GatewayMetrics;
use crate::names::ModelNames;
use crate::policy::PolicyState;
use crate::prompts::PromptRegistry;
use crate::redis_store::RedisStore;
use crate::route::catalog::ServedName;
use crate::route::metrics::RouteMetrics;
use crate::route::Router;
use crate::semantic::metrics::SemanticMetrics;
use crate::semantic::{Embedder, SemanticCache};
use crate::stack::{Pipeline, Stage, StageName};
use crate::store::Store;
use crate::usage::{summarize, unix_now, GroupBy, UsageQuery, UsageReport};

/// How often keys and prompts changed elsewhere (the CLI, other replicas) are picked up.
const RELOAD: Duration = Duration::from_secs(2);

pub struct Gateway {
    config: Arc<GatewayConfig>,
    store: Store,
    auth: Auth,
    ledger: Arc<Ledger>,
    metrics: Arc<GatewayMetrics>,
    policy: Arc<PolicyState>,
    meter: Arc<MeterState>,
    prompts: Arc<PromptRegistry>,
    /// The shared state, when configured (for `/ready`).
    redis: Option<RedisStore>,
    names: Arc<ModelNames>,
    /// The semantic cache, once an embedder is connected ([`Gateway::set_embedder`]).
    semantic: OnceLock<Arc<SemanticCache>>,
}

impl Gateway {
    /// Opens the database and Redis (when configured) and starts the ledger writer.
    /// `admin_key` is usually [`GatewayConfig::admin_key`].
    pub async fn open(config: GatewayConfig, admin_key: Option<String>) -> anyhow::Result<Arc<Self>> {
        config.semantic_cache.check(&config.resolved_database_url())?;
        let store = Store::open(&config.resolved_database_url()).await?;
        let names = Arc::new(ModelNames::new(&config));
        let metrics = Arc::new(GatewayMetrics::new(names.clone(), config.per_key_metrics)?);
        // Replays the spool first, so budgets are seeded with interrupted requests too.
        let ledger = Ledger::open(store.clone(), &config.ledger()).await?;
        let redis = match config.redis_url.as_deref() {
            Some(url) => Some(connect_redis(&config, url, &metrics).await?),
            None => None,
        };
        let keys = Arc::new(KeyCache::default());
        keys.replace_all(store.keys().await?);
        let prompts = PromptRegistry::open(store.clone()).await?;
        let spend = Arc::new(SpendBook::with_mode(redis.clone(), config.on_shared_state_error));
        if redis.is_none() {
            seed_spend(&store, &spend).await?;
        }
        let config = Arc::new(config);
        let auth = Auth::new(keys, admin_key.as_deref(), config.auth);
        let redis_probe = redis.clone();
        let policy = Arc::new(PolicyState {
            config: config.clone(),
            limits: RateLimits::new(redis),
            spend,
            metrics: Some(metrics.clone()),
            names: names.clone(),
        });
        let meter = Arc::new(MeterState {
            config: config.clone(),
            ledger: Some(ledger.clone()),
            metrics: Some(metrics.clone()),
            policy: Some(policy.clone()),
        });
        let semantic = OnceLock::new();
        let redis = redis_probe;
        let gateway =
            Arc::new(Self { config, store, auth, ledger, metrics, policy, meter, prompts, redis, names, semantic });
        tokio::spawn(reload(Arc::downgrade(&gateway)));
        Ok(gateway)
    }

    /// The configured stages (in `stages` order) over the router, or over `local` alone
    /// when no model group is configured.
    pub fn pipeline(&self, local: Arc<dyn Upstream>) -> Result<Pipeline, GatewayError> {
        let mut stages = Vec::new();
        for name in self.config.stage_order()? {
            if let Some(stage) = self.stage(name)? {
                stages.push(stage);
            }
        }
        Ok(Pipeline::new(stages, self.upstream(local)?))
    }

    /// Connects the embedding model the semantic cache looks questions up by; call it
    /// before [`Gateway::pipeline`]. Opens the configured backend (with `postgres`, loads the
    /// unexpired entries and starts listening). Nothing happens while the cache is off; only
    /// the first call counts.
    pub async fn set_embedder(&self, embedder: Arc<dyn Embedder>) -> Result<(), GatewayError> {
        let config = &self.config.semantic_cache;
        if !config.enabled || self.semantic.get().is_some() {
            return Ok(());
        }
        let url = self.config.resolved_database_url();
        let cache = SemanticCache::open(config.clone(), embedder, &url).await?;
        let metrics = SemanticMetrics::new(self.metrics.registry(), self.names.clone()).ok();
        let _ = self.semantic.set(Arc::new(cache.with_metrics(metrics)));
        Ok(())
    }

    /// The semantic cache stage: on needs an embedder.
    fn semantic_stage(&self) -> Result<Stage, GatewayError> {
        match self.semantic.get() {
            Some(cache) => Ok(Stage::SemanticCache(cache.clone())),
            None => Err(GatewayError::config(
                "`[gateway.semantic_cache]` is enabled but no embedding model is connected \
                 (serve an embedding model, or set `enabled = false`)",
            )),
        }
    }

    /// One stage, or None when its section leaves it off.
    fn stage(&self, name: StageName) -> Result<Option<Stage>, GatewayError> {
        let registry = self.metrics.registry();
        Ok(Some(match name {
            StageName::Meter => Stage::Meter(self.meter.clone()),
            StageName::Prompt => Stage::Prompt(self.prompts.clone()),
            StageName::Policy => Stage::Policy(self.policy.clone()),
            StageName::Guard if self.config.guardrails.policies.is_empty() => return Ok(None),
            StageName::Guard => {
                let guardrails = Arc::new(Guardrails::new(&self.config.guardrails)?);
                Stage::Guard(Arc::new(GuardStage { guardrails, metrics: GuardMetrics::new(registry).ok() }))
            }
            StageName::Cache if !self.config.cache.enabled => return Ok(None),
            StageName::Cache => {
                let cache = ResponseCache::new(
                    self.config.cache.clone(),
                    CacheMetrics::new(registry, self.names.clone()).ok(),
                )?;
                Stage::Cache(Arc::new(cache))
            }
            StageName::SemanticCache if !self.config.semantic_cache.enabled => return Ok(None),
            StageName::SemanticCache => self.semantic_stage()?,
        }))
    }

    /// The router over the configured groups (the local engine for deployments without a
    /// URL, and for names no group or alias claims), or the local engine alone.
    fn upstream(&self, local: Arc<dyn Upstream>) -> Result<Arc<dyn Upstream>, GatewayError> {
        let routing = &self.config.routing;
        if routing.groups.is_empty() {
            return Ok(local);
        }
        let pick = |_: &crate::route::DeploymentConfig| Some(local.clone());
        let router = Router::new(routing.clone(), &pick, RouteMetrics::new(self.metrics.registry()).ok())?;
        router.pass_unknown_names_to(local.clone());
        Ok(Arc::new(router))
    }

    /// The caller behind an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        self.auth.authenticate(authorization, unix_now())
    }

    pub fn auth_mode(&self) -> crate::config::AuthMode {
        self.auth.mode()
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Tells the gateway the local engine's served name and aliases (metric labels, and
    /// what a request without `model` resolves to).
    pub fn set_local_model(&self, name: &str, aliases: &[String]) {
        self.names.set_local(name, aliases);
    }

    /// Every name the routing serves: groups, aliases and `auto`.
    pub fn served_names(&self) -> Vec<ServedName> {
        self.config.routing.served_names()
    }

    /// The prompt registry (for its admin API).
    pub fn prompts(&self) -> &Arc<PromptRegistry> {
        &self.prompts
    }

    /// Writes every ledger row booked so far.
    pub async fn flush_ledger(&self) {
        self.ledger.flush().await;
    }

    /// Every completed ledger row (not those of requests still running), once those booked
    /// so far are written.
    pub async fn ledger_rows(&self) -> Result<Vec<crate::ledger::UsageRecord>, GatewayError> {
        self.ledger.flush().await;
        let rows = self.store.usage(0, i64::MAX, None).await.map_err(GatewayError::Internal)?;
        Ok(rows.into_iter().filter(|row| row.state != crate::ledger::RowState::Admitted).collect())
    }

    /// Requests the ledger holds as admitted and not yet completed.
    pub fn ledger_in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    pub async fn create_key(&self, new: NewKey) -> anyhow::Result<(String, ApiKey)> {
        let (secret, key) = new.issue(unix_now());
        self.store.insert_key(&key).await?;
        self.auth.keys.insert(key.clone());
        Ok((secret, key))
    }

    pub async fn revoke_key(&self, id_or_alias: &str) -> anyhow::Result<u64> {
        let now = unix_now();
        let revoked = self.store.revoke_key(id_or_alias, now).await?;
        self.auth.keys.revoke(id_or_alias, now);
        Ok(revoked)
    }

    pub async fn list_keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        self.store.keys().await
    }

    /// The usage report: everything for the admin, the caller's own key otherwise (and
    /// nothing for a caller without a key).
    pub async fn usage(&self, query: &UsageQuery, principal: &Principal) -> Result<UsageReport, ApiError> {
        let group_by = GroupBy::parse(query.group_by.as_deref()).ok_or_else(|| {
            ApiError::invalid_param("group_by", "group_by must be model, key, team, user, operation or prompt")
        })?;
        if !principal.is_admin && principal.key_id.is_empty() {
            return Err(crate::auth::forbidden("usage is reported to a key's owner or the admin: send a key"));
        }
        let scope = (!principal.is_admin).then_some(principal.key_id.as_str());
        self.ledger.flush().await;
        let (start, end) = (query.start.unwrap_or(0), query.end.unwrap_or(unix_now() + 1));
        let rows = self.store.usage(start, end, scope).await.map_err(GatewayError::Internal)?;
        Ok(summarize(&rows, group_by))
    }

    /// Whether the shared state (Redis) answers; none when none is configured.
    pub fn shared_state_up(&self) -> Option<bool> {
        self.redis.as_ref().map(RedisStore::is_up)
    }

    /// What a key spent in the current period, as its budget sees it.
    pub async fn key_spend(&self, key_id: &str, period: BudgetPeriod) -> f64 {
        self.policy.spend.spent(&format!("key:{key_id}"), period, unix_now()).await
    }

    pub fn render_metrics(&self) -> anyhow::Result<String> {
        self.metrics.render(self.ledger.depth(), self.ledger.dropped())
    }

    /// Flushes the ledger and closes the database (at shutdown).
    pub async fn close(&self) {
        self.ledger.close().await;
        self.store.close().await;
    }
}

async fn connect_redis(config: &GatewayConfig, url: &str, metrics: &GatewayMetrics) -> anyhow::Result<RedisStore> {
    let timeout = Duration::from_millis(config.redis_timeout_ms.max(1));
    RedisStore::connect_with(url, timeout, Some(metrics.registry())).await
}

/// Loads this period's spend from the ledger so budgets survive restarts.
async fn seed_spend(store: &Store, spend: &SpendBook) -> anyhow::Result<()> {
    let now = unix_now();
    for period in [BudgetPeriod::Day, BudgetPeriod::Month] {
        for (key_id, team, spent) in store.spend_since(crate::budget::period_start(period, now)).await? {
            spend.seed(&format!("key:{key_id}"), period, now, spent);
            if !team.is_empty() {
                spend.seed(&format!("team:{team}"), period, now, spent);
            }
        }
    }
    Ok(())
}

async fn reload(gateway: std::sync::Weak<Gateway>) {
    loop {
        tokio::time::sleep(RELOAD).await;
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        match gateway.store.keys().await {
            Ok(keys) => gateway.auth.keys.replace_all(keys),
            Err(error) => tracing::debug!(%error, "key reload failed"),
        }
        if let Err(error) = gateway.prompts.refresh().await {
            tracing::debug!(%error, "prompt reload failed");
        }
    }
}
