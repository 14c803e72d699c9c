//! Prometheus series named after vLLM's, prefixed `sconce:` (and `vllm:` when asked).
//!
//! Gauges and counters come from the engine's stats snapshot at scrape time; the
//! latency histograms are observed as requests stream and finish.

use std::sync::Mutex;

use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::backend::{EngineStats, RequestTimings};

const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const TOKEN_GAP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0,
];

/// One full set of series under one prefix.
struct Series {
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    prompt_tokens: IntCounter,
    generation_tokens: IntCounter,
    preemptions: IntCounter,
    prefix_queries: IntCounter,
    prefix_hits: IntCounter,
    success: IntCounterVec,
    ttft: Histogram,
    token_gap: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prefill: Histogram,
    decode: Histogram,
}

/// Registers metrics under one prefix with the `model_name` label.
struct SeriesBuilder<'a> {
    registry: &'a Registry,
    prefix: &'a str,
    model: &'a str,
}

impl SeriesBuilder<'_> {
    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(format!("{}:{name}", self.prefix), help).const_label("model_name", self.model)
    }

    fn gauge(&self, name: &str, help: &str) -> prometheus::Result<Gauge> {
        let gauge = Gauge::with_opts(self.opts(name, help))?;
        self.registry.register(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        let counter = IntCounter::with_opts(self.opts(name, help))?;
        self.registry.register(Box::new(counter.clone()))?;
        Ok(counter)
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
        let opts = HistogramOpts::from(self.opts(name, help)).buckets(buckets.to_vec());
        let histogram = Histogram::with_opts(opts)?;
        self.registry.register(Box::new(histogram.clone()))?;
        Ok(histogram)
    }

    fn build(&self) -> prometheus::Result<Series> {
        let success = IntCounterVec::new(
            self.opts("request_success_total", "Finished requests, by finish reason."),
            &["finished_reason"],
        )?;
        self.registry.register(Box::new(success.clone()))?;
        Ok(Series {
            running: self.gauge("num_requests_running", "Requests currently being generated.")?,
            waiting: self.gauge("num_requests_waiting", "Requests waiting to be scheduled.")?,
            kv_usage: self.gauge("kv_cache_usage_perc", "Fraction of KV cache blocks in use, from 0 to 1.")?,
            prompt_tokens: self.counter("prompt_tokens_total", "Prompt tokens processed.")?,
            generation_tokens: self.counter("generation_tokens_total", "Tokens generated.")?,
            preemptions: self.counter("num_preemptions_total", "Requests preempted to free KV blocks.")?,
            prefix_queries: self
                .counter("prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.")?,
            prefix_hits: self.counter("prefix_cache_hits_total", "Prompt tokens found in the prefix cache.")?,
            success,
            ttft: self.histogram(
                "time_to_first_token_seconds",
                "Time from arrival to the first token.",
                TTFT_BUCKETS,
            )?,
            token_gap: self.histogram(
                "inter_token_latency_seconds",
                "Time between two tokens of one choice.",
                TOKEN_GAP_BUCKETS,
            )?,
            e2e: self.histogram(
                "e2e_request_latency_seconds",
                "Time from arrival to the last token.",
                REQUEST_BUCKETS,
            )?,
            queue: self.histogram(
                "request_queue_time_seconds",
                "Time spent waiting before the first schedule.",
                REQUEST_BUCKETS,
            )?,
            prefill: self.histogram("request_prefill_time_seconds", "Time spent in prefill.", REQUEST_BUCKETS)?,
            decode: self.histogram("request_decode_time_seconds", "Time spent in decode.", REQUEST_BUCKETS)?,
        })
    }
}

fn sync_counter(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

impl Series {
    fn sync(&self, stats: &EngineStats) {
        self.running.set(stats.num_running as f64);
        self.waiting.set(stats.num_waiting as f64);
        self.kv_usage.set(stats.kv_usage);
        sync_counter(&self.prompt_tokens, stats.prompt_tokens_total);
        sync_counter(&self.generation_tokens, stats.generation_tokens_total);
        sync_counter(&self.preemptions, stats.preemptions);
        sync_counter(&self.prefix_queries, stats.prefix_cache_queries);
        sync_counter(&self.prefix_hits, stats.prefix_cache_hits);
    }

    fn observe_finish(&self, reason: &str, timings: Option<&RequestTimings>) {
        self.success.with_label_values(&[reason]).inc();
        if let Some(timings) = timings {
            self.ttft.observe(timings.time_to_first_token.as_secs_f64());
            self.e2e.observe(timings.e2e.as_secs_f64());
            self.queue.observe(timings.queued.as_secs_f64());
            self.prefill.observe(timings.prefill.as_secs_f64());
            self.decode.observe(timings.decode.as_secs_f64());
        }
    }
}

pub struct Metrics {
    registry: Registry,
    series: Vec<Series>,
    scrape: Mutex<()>,
}

impl Metrics {
    pub fn new(model_name: &str, vllm_compat: bool) -> anyhow::Result<Self> {
        let registry = Registry::new();
        let prefixes: &[&str] = if vllm_compat { &["sconce", "vllm"] } else { &["sconce"] };
        let series = prefixes
            .iter()
            .map(|prefix| SeriesBuilder { registry: &registry, prefix, model: model_name }.build())
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self { registry, series, scrape: Mutex::new(()) })
    }

    /// Seconds between two consecutive tokens of one choice.
    pub fn observe_token_gap(&self, seconds: f64) {
        self.series.iter().for_each(|series| series.token_gap.observe(seconds));
    }

    /// One choice finished.
    pub fn observe_finish(&self, reason: &str, timings: Option<&RequestTimings>) {
        self.series.iter().for_each(|series| series.observe_finish(reason, timings));
    }

    /// The text exposition, after syncing engine gauges and counters to `stats`.
    pub fn render(&self, stats: &EngineStats) -> anyhow::Result<String> {
        let _one_scrape_at_a_time = self.scrape.lock().map_err(|_| anyhow::anyhow!("metrics lock poisoned"))?;
        self.series.iter().for_each(|series| series.sync(stats));
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }
}

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_has_help_and_the_model_label() {
        let metrics = Metrics::new("tiny", true).unwrap();
        metrics.observe_finish("stop", None);
        let text = metrics.render(&EngineStats { prompt_tokens_total: 7, ..EngineStats::default() }).unwrap();
        for prefix in ["sconce:", "vllm:"] {
            assert!(text.contains(&format!("{prefix}prompt_tokens_total{{model_name=\"tiny\"}} 7")), "{text}");
            assert!(text.contains(&format!("# HELP {prefix}e2e_request_latency_seconds ")));
        }
        let types = text.lines().filter(|line| line.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|line| line.starts_with("# HELP")).count();
        assert_eq!(types, helps);
        assert_eq!(types, 30);
    }

    #[test]
    fn counters_follow_the_snapshot_without_double_counting() {
        let metrics = Metrics::new("m", false).unwrap();
        let stats = EngineStats { generation_tokens_total: 5, ..EngineStats::default() };
        metrics.render(&stats).unwrap();
        let text = metrics.render(&stats).unwrap();
        assert!(text.contains("sconce:generation_tokens_total{model_name=\"m\"} 5"));
    }
}
