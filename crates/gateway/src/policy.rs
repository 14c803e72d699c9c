//! The policy stage: allowed models, `max_tokens` ceilings, budgets, then RPM and TPM.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sconce_protocol::ApiError;

use crate::api::{with_headers, Api, Backend, Call, CallResult, ExtraHeaders, Failure, Service};
use crate::budget::SpendBook;
use crate::config::{BudgetPeriod, GatewayConfig};
use crate::context::{CallContext, Principal};
use crate::endpoint::ApiRequest;
use crate::error::GatewayError;
use crate::key_limits;
use crate::keys::ApiKey;
use crate::limits::{self, RateLimits, Unit};
use crate::metrics::GatewayMetrics;
use crate::names::ModelNames;

/// Everything the policy checks against, shared by all requests.
pub struct PolicyState {
    pub config: Arc<GatewayConfig>,
    pub limits: RateLimits,
    pub spend: Arc<SpendBook>,
    pub metrics: Option<Arc<GatewayMetrics>>,
    /// What a missing `model` resolves to, for the key's model list.
    pub names: Arc<ModelNames>,
}

/// The policy stage over one endpoint's inner stages.
pub struct Policed<A: Api> {
    state: Arc<PolicyState>,
    inner: Service<A>,
}

impl<A: Api> Policed<A> {
    pub fn new(state: Arc<PolicyState>, inner: Service<A>) -> Self {
        Self { state, inner }
    }
}

impl<A: Api> Backend<A> for Policed<A> {
    fn call(&self, mut call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let state = self.state.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            state.limit_request(&call.ctx, &mut call.request)?;
            let headers = state.admit(&call.ctx.principal, &mut call.request).await?;
            with_headers(inner.call(call).await, headers)
        })
    }
}

impl PolicyState {
    /// Admits one request of any endpoint for its caller (anyone without a key record
    /// passes); returns the `x-ratelimit-*` headers.
    pub async fn admit(&self, principal: &Principal, request: &mut impl ApiRequest) -> Result<ExtraHeaders, Failure> {
        match principal.key.as_deref() {
            Some(key) => self.admit_key(key, &principal.team, request).await,
            None => Ok(ExtraHeaders::new()),
        }
    }

    async fn admit_key(
        &self,
        key: &ApiKey,
        team: &str,
        request: &mut impl ApiRequest,
    ) -> Result<ExtraHeaders, Failure> {
        self.check_budgets(key, team).await?;
        let mut headers = ExtraHeaders::new();
        if let Some(rpm) = key.rpm_limit {
            self.take(&key.id, Unit::Requests, rpm, 1, &mut headers).await?;
        }
        if let Some(tpm) = key.tpm_limit {
            self.take(&key.id, Unit::Tokens, tpm, request.estimated_prompt_tokens(), &mut headers).await?;
        }
        Ok(headers)
    }

    async fn take(
        &self,
        key_id: &str,
        unit: Unit,
        limit: u64,
        cells: u64,
        headers: &mut ExtraHeaders,
    ) -> Result<(), Failure> {
        let verdict = self.limits.take(key_id, unit, limit, cells).await;
        headers.extend(limits::headers(unit, &verdict));
        if verdict.allowed {
            return Ok(());
        }
        self.reject(match unit {
            Unit::Requests => "rpm",
            Unit::Tokens => "tpm",
        });
        headers.push(("retry-after", limits::retry_after_secs(verdict.reset).to_string()));
        let message = format!("rate limit reached: {limit} {} per minute for this key", unit.as_str());
        Err(Failure { error: GatewayError::RateLimited(message).into(), headers: std::mem::take(headers) })
    }

    async fn check_budgets(&self, key: &ApiKey, team: &str) -> Result<(), Failure> {
        let now = crate::usage::unix_now();
        if let Some(max) = key.max_budget {
            let period = key.budget_period.unwrap_or_default();
            if self.spend.spent(&format!("key:{}", key.id), period, now).await >= max {
                return Err(self.over_budget("key", max, period));
            }
        }
        if let Some((max, period)) = self.config.teams.get(team).and_then(|t| Some((t.max_budget?, t.budget_period))) {
            let period = period.unwrap_or_default();
            if self.spend.spent(&format!("team:{team}"), period, now).await >= max {
                return Err(self.over_budget("team", max, period));
            }
        }
        Ok(())
    }

    fn over_budget(&self, scope: &str, max: f64, period: BudgetPeriod) -> Failure {
        self.reject("budget");
        GatewayError::BudgetExceeded(format!("the {scope} budget of {max} per {} is spent", period.as_str())).into()
    }

    fn reject(&self, reason: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_rejection(reason);
        }
    }
}

impl PolicyState {
    /// The key's per-request limits (models, choices, `max_tokens`, priority), before
    /// anything is counted; the admin and anonymous callers have none.
    fn limit_request(&self, ctx: &CallContext, request: &mut impl ApiRequest) -> Result<(), ApiError> {
        let Some(key) = ctx.principal.key.as_deref() else {
            return Ok(());
        };
        let result = key_limits::apply(key, &self.names, &self.config.routing, ctx.hints.tier.as_deref(), request);
        if result.is_err() {
            self.reject("key_limit");
        }
        result
    }
}

impl PolicyState {
    /// Books a finished request: spend for its key and team, completion tokens for TPM.
    pub async fn settle(&self, key: Option<&ApiKey>, team: &str, cost: f64, completion_tokens: u64) {
        let now = crate::usage::unix_now();
        if let Some(key) = key {
            self.spend.add(&format!("key:{}", key.id), now, cost).await;
            if let (Some(tpm), true) = (key.tpm_limit, completion_tokens > 0) {
                self.limits.take(&key.id, Unit::Tokens, tpm, completion_tokens).await;
            }
        }
        if !team.is_empty() {
            self.spend.add(&format!("team:{team}"), now, cost).await;
        }
    }
}
