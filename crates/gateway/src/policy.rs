//! The policy stage: allowed models, `max_tokens` ceilings, budgets, then RPM and TPM.

use std::sync::Arc;

use sconce_protocol::chat::ChatCompletionRequest;
use sconce_protocol::ApiError;

use crate::budget::SpendBook;
use crate::config::{BudgetPeriod, GatewayConfig};
use crate::keys::ApiKey;
use crate::limits::{self, RateLimits, Unit};
use crate::metrics::GatewayMetrics;
use crate::{ChatBackend, ChatCall, ChatFailure, ChatResult, ExtraHeaders, Layer, SharedBackend};

/// Everything the policy checks against, shared by all requests.
pub struct PolicyState {
    pub config: Arc<GatewayConfig>,
    pub limits: RateLimits,
    pub spend: Arc<SpendBook>,
    pub metrics: Option<Arc<GatewayMetrics>>,
}

#[derive(Clone)]
pub struct PolicyLayer(pub Arc<PolicyState>);

impl Layer for PolicyLayer {
    fn layer(&self, inner: SharedBackend) -> SharedBackend {
        Arc::new(Policy { state: self.0.clone(), inner })
    }
}

struct Policy {
    state: Arc<PolicyState>,
    inner: SharedBackend,
}

impl ChatBackend for Policy {
    fn chat(&self, mut call: ChatCall) -> futures_util::future::BoxFuture<'static, ChatResult> {
        let state = self.state.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let headers = match call.ctx.principal.key.clone() {
                Some(key) => state.admit(&key, &call.ctx.principal.team, &mut call.request).await?,
                None => ExtraHeaders::new(),
            };
            let mut outcome = inner.chat(call).await.map_err(|mut failure| {
                failure.headers.extend(headers.iter().cloned());
                failure
            })?;
            outcome.headers.extend(headers);
            Ok(outcome)
        })
    }
}

impl PolicyState {
    /// Checks one request against its key; returns the `x-ratelimit-*` headers.
    async fn admit(
        &self,
        key: &ApiKey,
        team: &str,
        request: &mut ChatCompletionRequest,
    ) -> Result<ExtraHeaders, ChatFailure> {
        if let Some(model) = request.model.as_deref().filter(|model| !key.allows_model(model)) {
            return Err(crate::auth::forbidden(&format!("this key may not use the model `{model}`")).into());
        }
        clamp_max_tokens(key, request)?;
        self.check_budgets(key, team).await?;
        let mut headers = ExtraHeaders::new();
        if let Some(rpm) = key.rpm_limit {
            self.take(&key.id, Unit::Requests, rpm, 1, &mut headers).await?;
        }
        if let Some(tpm) = key.tpm_limit {
            self.take(&key.id, Unit::Tokens, tpm, estimate_prompt_tokens(request), &mut headers).await?;
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
    ) -> Result<(), ChatFailure> {
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
        Err(ChatFailure { error: rate_limited(message, "rate_limit_exceeded"), headers: std::mem::take(headers) })
    }

    async fn check_budgets(&self, key: &ApiKey, team: &str) -> Result<(), ChatFailure> {
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

    fn over_budget(&self, scope: &str, max: f64, period: BudgetPeriod) -> ChatFailure {
        self.reject("budget");
        let message = format!("the {scope} budget of {max} per {} is spent", period.as_str());
        rate_limited(message, "budget_exceeded").into()
    }

    fn reject(&self, reason: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_rejection(reason);
        }
    }
}

fn rate_limited(message: String, code: &'static str) -> ApiError {
    ApiError { status: 429, kind: "rate_limit_error", message, param: None, code: Some(code) }
}

/// Caps `max_tokens` at the key's ceiling (and sets it when absent).
fn clamp_max_tokens(key: &ApiKey, request: &mut ChatCompletionRequest) -> Result<(), ApiError> {
    let Some(ceiling) = key.max_tokens else {
        return Ok(());
    };
    let ceiling = usize::try_from(ceiling).unwrap_or(usize::MAX);
    let wanted = request.max_tokens().unwrap_or(ceiling).min(ceiling);
    request.max_completion_tokens = Some(wanted);
    Ok(())
}

/// A cheap prompt-size estimate (4 bytes a token) for the TPM pre-check.
fn estimate_prompt_tokens(request: &ChatCompletionRequest) -> u64 {
    let bytes: usize = request.messages.iter().map(|message| message.text().map_or(0, |text| text.len())).sum();
    (bytes as u64).div_ceil(4).max(1)
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
