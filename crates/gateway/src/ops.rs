//! [`Gateway`]: opens the store, loads keys, starts the ledger and builds the stages.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sconce_protocol::ApiError;

use crate::auth::Auth;
use crate::budget::SpendBook;
use crate::config::{BudgetPeriod, GatewayConfig};
use crate::endpoint::{EndpointReply, EndpointRequest};
use crate::keys::{ApiKey, KeyCache, NewKey};
use crate::ledger::Ledger;
use crate::limits::RateLimits;
use crate::meter::{MeterLayer, MeterState, Tally};
use crate::metrics::GatewayMetrics;
use crate::policy::{with_headers, PolicyLayer, PolicyState};
use crate::prompts::{PromptLayer, PromptRegistry};
use crate::redis_store::RedisStore;
use crate::store::Store;
use crate::usage::{summarize, unix_now, GroupBy, UsageQuery, UsageReport};
use crate::{CallContext, CallResult, ChatFailure, Outcome, Principal, Reply, Stack};

/// How often keys and prompts changed elsewhere (the CLI, other replicas) are picked up.
const RELOAD: Duration = Duration::from_secs(2);

pub struct Gateway {
    pub config: Arc<GatewayConfig>,
    pub store: Store,
    pub auth: Auth,
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<GatewayMetrics>,
    pub policy: Arc<PolicyState>,
    pub meter: Arc<MeterState>,
    pub prompts: Arc<PromptRegistry>,
}

impl Gateway {
    /// Opens the database and Redis (when configured) and starts the ledger writer.
    /// `admin_key` is usually [`GatewayConfig::admin_key`].
    pub async fn open(config: GatewayConfig, admin_key: Option<String>) -> anyhow::Result<Arc<Self>> {
        let store = Store::open(&config.resolved_database_url()).await?;
        let redis = match config.redis_url.as_deref() {
            Some(url) => Some(RedisStore::connect(url).await?),
            None => None,
        };
        let keys = Arc::new(KeyCache::default());
        keys.replace_all(store.keys().await?);
        let prompts = PromptRegistry::open(store.clone()).await?;
        let spend = Arc::new(SpendBook::new(redis.clone()));
        if redis.is_none() {
            seed_spend(&store, &spend).await?;
        }
        let config = Arc::new(config);
        let metrics = Arc::new(GatewayMetrics::new()?);
        let ledger = Ledger::start(store.clone(), &config.ledger());
        let auth = Auth::new(keys, admin_key.as_deref());
        let policy = Arc::new(PolicyState {
            config: config.clone(),
            limits: RateLimits::new(redis),
            spend,
            metrics: Some(metrics.clone()),
        });
        let meter = Arc::new(MeterState {
            config: config.clone(),
            ledger: Some(ledger.clone()),
            metrics: Some(metrics.clone()),
            policy: Some(policy.clone()),
        });
        let gateway = Arc::new(Self { config, store, auth, ledger, metrics, policy, meter, prompts });
        tokio::spawn(reload(Arc::downgrade(&gateway)));
        Ok(gateway)
    }

    /// Metering outermost, so refusals are metered too; then the prompt, so the policy
    /// and every later stage see the rendered request; then the policy.
    pub fn stack(&self) -> Stack {
        Stack::new()
            .push(MeterLayer(self.meter.clone()))
            .push(PromptLayer(self.prompts.clone()))
            .push(PolicyLayer(self.policy.clone()))
    }

    /// Runs a request of an endpoint outside the chat stack (`/v1/completions`) through
    /// the stack's first two stages, the meter and the policy, then `backend`.
    pub async fn serve<Q, F, C, Fut>(
        &self,
        ctx: CallContext,
        mut request: Q,
        backend: impl FnOnce(Q, CallContext) -> Fut,
    ) -> CallResult<Reply<F, C>>
    where
        Q: EndpointRequest,
        F: EndpointReply,
        C: EndpointReply,
        Fut: Future<Output = Result<Reply<F, C>, ApiError>>,
    {
        let tally = Tally::start(&ctx, &request);
        let policy = self.policy.clone();
        let run = async move {
            let headers = policy.admit(&ctx.principal, &mut request).await?;
            with_headers(backend(request, ctx).await.map(Outcome::new).map_err(ChatFailure::from), headers)
        };
        self.meter.clone().meter(tally, run).await
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

    /// The usage report: everything for the admin, the caller's own key otherwise.
    pub async fn usage(&self, query: &UsageQuery, principal: &Principal) -> Result<UsageReport, ApiError> {
        let group_by = GroupBy::parse(query.group_by.as_deref()).ok_or_else(|| {
            ApiError::invalid_param("group_by", "group_by must be model, key, team, user, operation or prompt")
        })?;
        let scope = (self.auth.is_enabled() && !principal.is_admin).then_some(principal.key_id.as_str());
        self.ledger.flush().await;
        let (start, end) = (query.start.unwrap_or(0), query.end.unwrap_or(unix_now() + 1));
        let rows = self.store.usage(start, end, scope).await.map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(summarize(&rows, group_by))
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
