//! The metering stage: exact usage from the backend, TTFT, time per output token and
//! latency, cost from the price table; then the ledger row, metrics, spend and span.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::Stream;
use sconce_protocol::chat::{ChatCompletionChunk, ChatCompletionResponse};
use sconce_protocol::{ApiError, Usage};

use crate::config::GatewayConfig;
use crate::ledger::{Ledger, UsageRecord};
use crate::metrics::GatewayMetrics;
use crate::policy::PolicyState;
use crate::telemetry::{Operation, RequestSpan};
use crate::{CallContext, ChatBackend, ChatCall, ChatReply, ChatResult, ChunkStream, Layer, SharedBackend};

pub const COST_HEADER: &str = "x-sconce-cost";
pub const OVERHEAD_HEADER: &str = "x-sconce-gateway-overhead-ms";

pub struct MeterState {
    pub config: Arc<GatewayConfig>,
    pub ledger: Option<Arc<Ledger>>,
    pub metrics: Option<Arc<GatewayMetrics>>,
    pub policy: Option<Arc<PolicyState>>,
}

#[derive(Clone)]
pub struct MeterLayer(pub Arc<MeterState>);

impl Layer for MeterLayer {
    fn layer(&self, inner: SharedBackend) -> SharedBackend {
        Arc::new(Meter { state: self.0.clone(), inner })
    }
}

struct Meter {
    state: Arc<MeterState>,
    inner: SharedBackend,
}

impl ChatBackend for Meter {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        let state = self.state.clone();
        let inner = self.inner.clone();
        let mut tally = Tally::start(&call);
        Box::pin(async move {
            match inner.chat(call).await {
                Ok(mut outcome) => {
                    let overhead = tally.ctx.marks.overhead(tally.ctx.received);
                    outcome.headers.push((OVERHEAD_HEADER, format!("{:.3}", overhead.as_secs_f64() * 1e3)));
                    outcome.reply = match outcome.reply {
                        ChatReply::Full(response) => {
                            tally.absorb_full(&response);
                            let cost = state.finish(tally);
                            outcome.headers.push((COST_HEADER, format!("{cost:.8}")));
                            ChatReply::Full(response)
                        }
                        ChatReply::Stream(stream) => {
                            ChatReply::Stream(Box::pin(MeteredStream { inner: stream, tally: Some(tally), state }))
                        }
                    };
                    Ok(outcome)
                }
                Err(failure) => {
                    tally.fail(&failure.error);
                    state.finish(tally);
                    Err(failure)
                }
            }
        })
    }
}

/// What is known of one request so far.
struct Tally {
    ctx: CallContext,
    ts: i64,
    model: String,
    user: String,
    first_token: Option<Instant>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    status: u16,
    span: Option<RequestSpan>,
}

impl Tally {
    fn start(call: &ChatCall) -> Self {
        Self {
            ctx: call.ctx.clone(),
            ts: crate::usage::unix_now(),
            model: call.request.model.clone().unwrap_or_default(),
            user: call.request.sampling.user.clone().unwrap_or_default(),
            first_token: None,
            usage: None,
            finish_reason: None,
            status: 499,
            span: RequestSpan::start(Operation::Chat, call.request.model.as_deref(), &call.ctx),
        }
    }

    fn absorb_full(&mut self, response: &ChatCompletionResponse) {
        self.model.clone_from(&response.model);
        self.usage = Some(response.usage);
        self.finish_reason = response.choices.first().and_then(|choice| choice.finish_reason.clone());
        self.status = 200;
    }

    fn absorb_chunk(&mut self, chunk: &ChatCompletionChunk) {
        if self.model != chunk.model {
            self.model.clone_from(&chunk.model);
        }
        for choice in &chunk.choices {
            if self.first_token.is_none() && choice.delta.content.as_deref().is_some_and(|text| !text.is_empty()) {
                self.first_token = Some(Instant::now());
            }
            if choice.finish_reason.is_some() && self.finish_reason.is_none() {
                self.finish_reason.clone_from(&choice.finish_reason);
            }
        }
        if let Some(Some(usage)) = chunk.usage {
            self.usage = Some(usage);
            self.status = 200;
        }
    }

    fn fail(&mut self, error: &ApiError) {
        self.status = error.status;
        self.finish_reason = Some(error.code.unwrap_or("error").to_string());
    }

    fn into_record(self, config: &GatewayConfig) -> UsageRecord {
        let latency = self.ctx.received.elapsed();
        let usage = self.usage.unwrap_or_default();
        let (prompt, completion) = (usage.prompt_tokens as u64, usage.completion_tokens as u64);
        let cached = usage.prompt_tokens_details.cached_tokens as u64;
        let overhead = self.ctx.marks.overhead(self.ctx.received);
        let ttft = match (self.first_token, self.ctx.marks.timings.get()) {
            (Some(first), _) => first.saturating_duration_since(self.ctx.received),
            (None, Some(timings)) if self.status == 200 => timings.time_to_first_token + overhead,
            _ => latency,
        };
        let tpot =
            if completion > 1 { (latency.saturating_sub(ttft)).as_secs_f64() / (completion - 1) as f64 } else { 0.0 };
        let finish_reason =
            self.finish_reason.unwrap_or_else(|| if self.status == 499 { "cancelled".into() } else { String::new() });
        UsageRecord {
            request_id: self.ctx.request_id,
            ts: self.ts,
            cost: if self.status == 200 { config.cost(&self.model, prompt, cached, completion) } else { 0.0 },
            model: self.model,
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
        }
    }
}

impl MeterState {
    /// Books the request everywhere; returns its cost.
    fn finish(&self, mut tally: Tally) -> f64 {
        let key = tally.ctx.principal.key.clone();
        let span = tally.span.take();
        let record = tally.into_record(&self.config);
        let cost = record.cost;
        if let Some(metrics) = &self.metrics {
            metrics.observe_request(&record.model, &record.key_alias, record.status);
            metrics.observe_tokens(record.prompt_tokens, record.cached_tokens, record.completion_tokens);
            metrics.observe_spend(&record.model, record.cost);
            metrics.observe_overhead(record.overhead_s);
        }
        if let Some(span) = span {
            span.end(&record);
        }
        if let Some(policy) = self.policy.clone() {
            let (team, completion) = (record.team.clone(), record.completion_tokens);
            spawn(async move { policy.settle(key.as_deref(), &team, cost, completion).await });
        }
        if let Some(ledger) = &self.ledger {
            ledger.record(record);
        }
        cost
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
    }
}

/// Meters chunks as they pass; books the request when the stream ends or is dropped.
struct MeteredStream {
    inner: ChunkStream,
    tally: Option<Tally>,
    state: Arc<MeterState>,
}

impl Stream for MeteredStream {
    type Item = Result<ChatCompletionChunk, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.inner.as_mut().poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(tally) = self.tally.as_mut() {
                    tally.absorb_chunk(chunk);
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(tally) = self.tally.as_mut() {
                    tally.fail(error);
                }
            }
            Poll::Ready(None) => self.close(),
            Poll::Pending => {}
        }
        item
    }
}

impl MeteredStream {
    fn close(&mut self) {
        if let Some(tally) = self.tally.take() {
            self.state.finish(tally);
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        self.close();
    }
}
