//! The metering stage: exact usage from the backend, TTFT, time per output token and
//! latency, cost from the price table; then the ledger row, metrics, spend and span.
//! A request that ends early (client hang-up: 499, or a failure) is booked with the tokens
//! it produced, from the backend's running counts (`Journal::live`), and their cost.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::{Future, Stream};
use sconce_protocol::{ApiError, Usage};

use crate::api::{Api, Backend, Call, CallResult, Endpoint, Reply, ReplyStream, Service};
use crate::config::GatewayConfig;
use crate::context::CallContext;
use crate::endpoint::{ApiReply, ApiRequest};
use crate::ledger::{Admission, Ledger, RowState, UsageRecord};
use crate::metrics::GatewayMetrics;
use crate::policy::PolicyState;
use crate::telemetry::RequestSpan;

pub const COST_HEADER: &str = "x-sconce-cost";
pub const OVERHEAD_HEADER: &str = "x-sconce-gateway-overhead-ms";

pub struct MeterState {
    pub config: Arc<GatewayConfig>,
    pub ledger: Option<Arc<Ledger>>,
    pub metrics: Option<Arc<GatewayMetrics>>,
    pub policy: Option<Arc<PolicyState>>,
}

/// The metering stage over one endpoint's inner stages.
pub struct Metered<A: Api> {
    state: Arc<MeterState>,
    inner: Service<A>,
}

impl<A: Api> Metered<A> {
    pub fn new(state: Arc<MeterState>, inner: Service<A>) -> Self {
        Self { state, inner }
    }
}

impl<A: Api> Backend<A> for Metered<A> {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let tally = Tally::start::<A>(&call.ctx, &call.request);
        let inner = self.inner.clone();
        Box::pin(self.state.clone().meter(tally, async move { inner.call(call).await }))
    }
}

impl MeterState {
    /// Meters one request around `run` (the stages under the meter): one ledger row,
    /// whether it succeeds, fails, streams or is cancelled.
    pub async fn meter<A: Api>(
        self: Arc<Self>,
        tally: Tally,
        run: impl Future<Output = CallResult<A>>,
    ) -> CallResult<A> {
        let (received, journal) = (tally.ctx.received, tally.ctx.journal.clone());
        self.admit(&tally);
        let mut booking = Booking { tally: Some(tally), state: self };
        match run.await {
            Ok(mut outcome) => {
                let overhead = journal.overhead(received);
                outcome.headers.push((OVERHEAD_HEADER, format!("{:.3}", overhead.as_secs_f64() * 1e3)));
                outcome.reply = match outcome.reply {
                    Reply::Full(mut response) => {
                        booking.absorb(response.as_mut(), true);
                        let cost = booking.finish();
                        outcome.headers.push((COST_HEADER, format!("{cost:.8}")));
                        Reply::Full(response)
                    }
                    Reply::Stream(inner) => Reply::Stream(Box::pin(MeteredStream { inner, booking })),
                };
                Ok(outcome)
            }
            Err(failure) => {
                booking.fail(&failure.error);
                booking.finish();
                Err(failure)
            }
        }
    }
}

/// What is known of one request so far.
pub struct Tally {
    ctx: CallContext,
    ts: i64,
    endpoint: Endpoint,
    model: String,
    user: String,
    first_token: Option<Instant>,
    /// The latest usage a reply showed (running ones with `continuous_usage_stats`).
    usage: Option<Usage>,
    /// The usage is the final one: the request completed.
    complete: bool,
    finish_reason: Option<String>,
    tool_calls: u64,
    status: u16,
    span: Option<RequestSpan>,
}

impl Tally {
    /// Starts metering a request as it enters the meter.
    pub fn start<A: Api>(ctx: &CallContext, request: &A::Request) -> Self {
        Self {
            ctx: ctx.clone(),
            ts: crate::usage::unix_now(),
            endpoint: A::ENDPOINT,
            model: request.model().unwrap_or_default().to_string(),
            user: request.user().unwrap_or_default().to_string(),
            first_token: None,
            usage: None,
            complete: false,
            finish_reason: None,
            tool_calls: 0,
            status: 499,
            span: RequestSpan::start(A::ENDPOINT, request.model(), ctx),
        }
    }

    /// Reads a full reply (`whole`) or a chunk; a full reply's usage, or a usage-only
    /// chunk, means the request completed.
    fn absorb(&mut self, reply: &impl ApiReply, whole: bool) {
        if self.model != reply.model() {
            self.model = reply.model().to_string();
        }
        if self.first_token.is_none() && reply.shows_text() {
            self.first_token = Some(Instant::now());
        }
        if self.finish_reason.is_none() {
            self.finish_reason = reply.finish_reason().map(str::to_string);
        }
        self.tool_calls += reply.tool_calls_started();
        if let Some(usage) = reply.usage() {
            self.usage = Some(*usage);
            if whole || reply.is_usage_only() {
                self.complete = true;
                self.status = 200;
            }
        }
    }

    fn fail(&mut self, error: &ApiError) {
        self.status = error.status;
        self.finish_reason = Some(error.code.unwrap_or("error").to_string());
    }

    /// (prompt, cached, completion) tokens: the final usage, or for a request that ended
    /// early the most of the last usage seen and the backend's running counts.
    fn tokens(&self) -> (u64, u64, u64) {
        let usage = self.usage.unwrap_or_default();
        let seen = (
            usage.prompt_tokens as u64,
            usage.prompt_tokens_details.cached_tokens as u64,
            usage.completion_tokens as u64,
        );
        if self.complete {
            return seen;
        }
        let live = self.ctx.journal.live.snapshot();
        (seen.0.max(live.0), seen.1.max(live.1), seen.2.max(live.2))
    }

    /// The cost of the tokens that ran, from the price table, however the request ended.
    fn cost(&self, config: &GatewayConfig) -> f64 {
        let (prompt, cached, completion) = self.tokens();
        config.cost(&self.model, prompt, cached, completion)
    }

    fn into_record(self, config: &GatewayConfig) -> UsageRecord {
        let cost = self.cost(config);
        let latency = self.ctx.received.elapsed();
        let (prompt, cached, completion) = self.tokens();
        let overhead = self.ctx.journal.overhead(self.ctx.received);
        let ttft = match (self.first_token, self.ctx.journal.timings.get()) {
            (Some(first), _) => first.saturating_duration_since(self.ctx.received),
            (None, Some(timings)) if self.status == 200 => timings.time_to_first_token + overhead,
            _ => latency,
        };
        let tpot =
            if completion > 1 { (latency.saturating_sub(ttft)).as_secs_f64() / (completion - 1) as f64 } else { 0.0 };
        let finish_reason = match self.finish_reason {
            _ if self.status == 499 => "cancelled".to_string(),
            reason => reason.unwrap_or_default(),
        };
        let used = self.ctx.journal.prompt.get();
        let model = match used.and_then(|used| used.model.as_ref()) {
            Some(prompt_model) if self.model.is_empty() => prompt_model.clone(),
            _ => self.model,
        };
        UsageRecord {
            request_id: self.ctx.request_id,
            ts: self.ts,
            operation: self.endpoint.operation().to_string(),
            cost,
            model,
            key_id: self.ctx.principal.key_id,
            key_alias: self.ctx.principal.alias,
            team: self.ctx.principal.team,
            user: self.user,
            status: self.status,
            finish_reason,
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            ttft_s: ttft.as_secs_f64(),
            tpot_s: tpot,
            latency_s: latency.as_secs_f64(),
            overhead_s: overhead.as_secs_f64(),
            prompt_name: used.map(|used| used.name.clone()).unwrap_or_default(),
            prompt_version: used.map_or(0, |used| used.version),
            prompt_label: used.and_then(|used| used.label.clone()).unwrap_or_default(),
            state: RowState::Done,
            tool_calls: self.tool_calls,
        }
    }
}

/// Ledger durability: the row a request gets as it is admitted, completed by `finish`.
impl MeterState {
    fn admit(&self, tally: &Tally) {
        if let Some(ledger) = &self.ledger {
            ledger.admit(tally.admission(&self.config));
        }
    }
}

impl Tally {
    fn admission(&self, config: &Arc<GatewayConfig>) -> Admission {
        let principal = &self.ctx.principal;
        let row = UsageRecord {
            request_id: self.ctx.request_id.clone(),
            ts: self.ts,
            operation: self.endpoint.operation().to_string(),
            model: self.model.clone(),
            key_id: principal.key_id.clone(),
            key_alias: principal.alias.clone(),
            team: principal.team.clone(),
            user: self.user.clone(),
            state: RowState::Admitted,
            ..UsageRecord::default()
        };
        let (journal, received) = (self.ctx.journal.clone(), self.ctx.received);
        Admission { row, journal, received, pricing: config.clone() }
    }
}

impl MeterState {
    /// Books the request everywhere; returns its cost.
    fn finish(&self, mut tally: Tally) -> f64 {
        let key = tally.ctx.principal.key.clone();
        let hold = tally.ctx.journal.budget_hold.take();
        let journal = tally.ctx.journal.clone();
        let span = tally.span.take();
        let record = tally.into_record(&self.config);
        let cost = record.cost;
        if let Some(metrics) = &self.metrics {
            metrics.observe_request(&record.model, &record.key_alias, record.status);
            metrics.observe_tokens(record.prompt_tokens, record.cached_tokens, record.completion_tokens);
            metrics.observe_spend(&record.model, &record.key_alias, record.cost);
            metrics.observe_overhead(record.overhead_s);
        }
        if let Some(span) = span {
            span.end(&record);
        }
        if let Some(policy) = self.policy.clone() {
            let (team, completion) = (record.team.clone(), record.completion_tokens);
            spawn(async move { policy.settle(key.as_deref(), &team, cost, completion, hold).await });
        }
        if let Some(ledger) = &self.ledger {
            ledger.complete(record, &journal);
        }
        cost
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

/// Books a request exactly once: when it finishes, or when dropped (cancelled: 499).
struct Booking {
    tally: Option<Tally>,
    state: Arc<MeterState>,
}

impl Booking {
    /// Reads a reply or chunk and writes the cost into its usage, once known.
    fn absorb(&mut self, reply: &mut impl ApiReply, whole: bool) {
        if let Some(tally) = self.tally.as_mut() {
            tally.absorb(reply, whole);
            if let Some(usage) = reply.usage_mut() {
                usage.cost = Some(tally.cost(&self.state.config));
            }
        }
    }

    fn fail(&mut self, error: &ApiError) {
        if let Some(tally) = self.tally.as_mut() {
            tally.fail(error);
        }
    }

    /// Books the request (once); returns its cost.
    fn finish(&mut self) -> f64 {
        self.tally.take().map_or(0.0, |tally| self.state.finish(tally))
    }
}

impl Drop for Booking {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Meters chunks as they pass; books the request when the stream ends or is dropped.
struct MeteredStream<C> {
    inner: ReplyStream<C>,
    booking: Booking,
}

impl<C: ApiReply> Stream for MeteredStream<C> {
    type Item = Result<C, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut item = self.inner.as_mut().poll_next(cx);
        match &mut item {
            Poll::Ready(Some(Ok(chunk))) => self.booking.absorb(chunk, false),
            Poll::Ready(Some(Err(error))) => self.booking.fail(error),
            Poll::Ready(None) => {
                self.booking.finish();
            }
            Poll::Pending => {}
        }
        item
    }
}
