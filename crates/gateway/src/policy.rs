//! The policy stage: allowed models, `max_tokens` ceilings, RPM and TPM, then a hold on the
//! key's and team's budgets for the request's maximum cost (settled by the meter).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sconce_protocol::ApiError;

use crate::api::{with_headers, Api, Backend, Call, CallResult, ExtraHeaders, Failure, Service};
use crate::budget::{BudgetLimit, Hold, Refusal, SpendBook};
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
            if let Some(hold) = state.reserve(&call.ctx, &call.request).await? {
                call.ctx.journal.budget_hold.put(hold);
            }
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
        _team: &str,
        request: &mut impl ApiRequest,
    ) -> Result<ExtraHeaders, Failure> {
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

    /// 429: the budget is spent, or too little of it is left for the request's maximum cost.
    fn over_budget(&self, scope: &str, max: f64, period: BudgetPeriod, amount: f64) -> Failure {
        self.reject("budget");
        let message = format!(
            "the {scope} budget of {max} per {} is spent, or has no room for this request's maximum cost of {amount:.8}",
            period.as_str()
        );
        GatewayError::BudgetExceeded(message).into()
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
    /// Holds the request's maximum cost on its key's and team's budgets (none without a
    /// budget); refuses when a budget is spent or the hold would cross it.
    pub async fn reserve(&self, ctx: &CallContext, request: &impl ApiRequest) -> Result<Option<Hold>, Failure> {
        let Some(key) = ctx.principal.key.as_deref() else { return Ok(None) };
        let limits = self.budget_limits(key, &ctx.principal.team);
        if limits.is_empty() {
            return Ok(None);
        }
        let amount = crate::budget::max_cost(&self.config, request);
        match self.spend.reserve(&limits, crate::usage::unix_now(), amount).await {
            Ok(hold) => Ok(Some(hold)),
            Err(Refusal::Over(i)) => {
                let Some(limit) = limits.get(i) else {
                    return Err(self.over_budget("key", 0.0, Default::default(), amount));
                };
                let scope = if limit.scope.starts_with("team:") { "team" } else { "key" };
                Err(self.over_budget(scope, limit.max, limit.period, amount))
            }
            Err(Refusal::Unavailable) => {
                self.reject("shared_state");
                let message = "budgets cannot be checked: the shared state (Redis) is unreachable";
                Err(ApiError::unavailable(message).with_code("shared_state_unavailable").into())
            }
        }
    }

    /// The key's budget and its team's, as configured.
    fn budget_limits(&self, key: &ApiKey, team: &str) -> Vec<BudgetLimit> {
        let mut limits = Vec::new();
        if let Some(max) = key.max_budget {
            let period = key.budget_period.unwrap_or_default();
            limits.push(BudgetLimit { scope: format!("key:{}", key.id), period, max });
        }
        if let Some((max, period)) = self.config.teams.get(team).and_then(|t| Some((t.max_budget?, t.budget_period))) {
            limits.push(BudgetLimit { scope: format!("team:{team}"), period: period.unwrap_or_default(), max });
        }
        limits
    }

    /// Books a finished request: releases its hold and books its cost for its key and team,
    /// and its completion tokens for TPM.
    pub async fn settle(
        &self,
        key: Option<&ApiKey>,
        team: &str,
        cost: f64,
        completion_tokens: u64,
        hold: Option<Hold>,
    ) {
        let now = crate::usage::unix_now();
        let mut scopes = Vec::new();
        if let Some(key) = key {
            if let (Some(tpm), true) = (key.tpm_limit, completion_tokens > 0) {
                self.limits.take(&key.id, Unit::Tokens, tpm, completion_tokens).await;
            }
            scopes.push(format!("key:{}", key.id));
        }
        if !team.is_empty() {
            scopes.push(format!("team:{team}"));
        }
        self.spend.settle(hold, &scopes, now, cost).await;
    }
}
