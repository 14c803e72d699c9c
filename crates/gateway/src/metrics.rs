//! The gateway's Prometheus series, prefixed `sconce_`. Labels are bounded: model labels
//! are names the gateway serves (anything else is `other`), key aliases (chosen by admins)
//! appear only with `per_key_metrics`, never raw keys or users.

use std::sync::Arc;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::names::ModelNames;

pub struct GatewayMetrics {
    registry: Registry,
    names: Arc<ModelNames>,
    requests: IntCounterVec,
    per_key: Option<PerKey>,
    tokens: IntCounterVec,
    spend: CounterVec,
    rejections: IntCounterVec,
    ledger_depth: IntGauge,
    ledger_dropped: IntCounter,
    overhead: Histogram,
}

impl GatewayMetrics {
    /// The registry, for stages that add their own series (routing, cache, guardrails).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `per_key`: also export requests and spend by key alias.
    pub fn new(names: Arc<ModelNames>, per_key: bool) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("sconce_gateway_requests_total", "Gateway requests by model and status"),
            &["model", "status"],
        )?;
        let per_key = if per_key { Some(PerKey::new(&registry)?) } else { None };
        let tokens = IntCounterVec::new(Opts::new("sconce_gateway_tokens_total", "Metered tokens by type"), &["type"])?;
        let spend = CounterVec::new(Opts::new("sconce_gateway_spend_total", "Metered cost by model"), &["model"])?;
        let rejections = IntCounterVec::new(
            Opts::new("sconce_gateway_rejections_total", "Requests refused by a limit or budget"),
            &["reason"],
        )?;
        let ledger_depth = IntGauge::new("sconce_gateway_ledger_queue_depth", "Ledger rows waiting for the writer")?;
        let ledger_dropped = IntCounter::new(
            "sconce_gateway_ledger_dropped_total",
            "Ledger rows not written (full queue, or commits failed after retries); kept in the spool",
        )?;
        let buckets = vec![0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1];
        let overhead = Histogram::with_opts(
            HistogramOpts::new("sconce_gateway_overhead_seconds", "Time spent in gateway stages").buckets(buckets),
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(spend.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(ledger_depth.clone()))?;
        registry.register(Box::new(ledger_dropped.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        Ok(Self {
            registry,
            names,
            requests,
            per_key,
            tokens,
            spend,
            rejections,
            ledger_depth,
            ledger_dropped,
            overhead,
        })
    }

    pub fn observe_request(&self, model: &str, key: &str, status: u16) {
        self.requests.with_label_values(&[self.names.label(model), status_label(status)]).inc();
        if let Some(per_key) = &self.per_key {
            per_key.requests.with_label_values(&[key, status_label(status)]).inc();
        }
    }

    pub fn observe_tokens(&self, prompt: u64, cached: u64, completion: u64) {
        self.tokens.with_label_values(&["prompt"]).inc_by(prompt);
        self.tokens.with_label_values(&["cached"]).inc_by(cached);
        self.tokens.with_label_values(&["completion"]).inc_by(completion);
    }

    pub fn observe_spend(&self, model: &str, key: &str, cost: f64) {
        if cost > 0.0 {
            self.spend.with_label_values(&[self.names.label(model)]).inc_by(cost);
            if let Some(per_key) = &self.per_key {
                per_key.spend.with_label_values(&[key]).inc_by(cost);
            }
        }
    }

    pub fn observe_rejection(&self, reason: &str) {
        self.rejections.with_label_values(&[reason]).inc();
    }

    pub fn observe_overhead(&self, seconds: f64) {
        self.overhead.observe(seconds);
    }

    /// Text exposition, with the ledger gauges refreshed.
    pub fn render(&self, ledger_depth: usize, ledger_dropped: u64) -> anyhow::Result<String> {
        self.ledger_depth.set(i64::try_from(ledger_depth).unwrap_or(i64::MAX));
        let seen = self.ledger_dropped.get();
        self.ledger_dropped.inc_by(ledger_dropped.saturating_sub(seen));
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }
}

/// Series by key alias, exported only with `per_key_metrics`.
struct PerKey {
    requests: IntCounterVec,
    spend: CounterVec,
}

impl PerKey {
    fn new(registry: &Registry) -> anyhow::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("sconce_gateway_key_requests_total", "Gateway requests by key alias and status"),
            &["key", "status"],
        )?;
        let spend =
            CounterVec::new(Opts::new("sconce_gateway_key_spend_total", "Metered cost by key alias"), &["key"])?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(spend.clone()))?;
        Ok(Self { requests, spend })
    }
}

/// Status classes keep the label set small.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        401 => "401",
        403 => "403",
        429 => "429",
        499 => "499",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
