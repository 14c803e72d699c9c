//! Embedding series, label `model`: requests, tokens, batch sizes and queue time.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const QUEUE_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub struct EmbeddingMetrics {
    registry: Registry,
    requests: IntCounterVec,
    tokens: IntCounterVec,
    batch_size: HistogramVec,
    queue_time: HistogramVec,
}

impl EmbeddingMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounterVec> {
            let counter = IntCounterVec::new(Opts::new(name, help), &["model"])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<HistogramVec> {
            let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), &["model"])?;
            registry.register(Box::new(histogram.clone()))?;
            Ok(histogram)
        };
        Ok(Self {
            requests: counter("sconce_embedding_requests_total", "Embedding requests answered.")?,
            tokens: counter("sconce_embedding_tokens_total", "Tokens embedded.")?,
            batch_size: histogram("sconce_embedding_batch_size", "Inputs per forward pass.", BATCH_BUCKETS)?,
            queue_time: histogram(
                "sconce_embedding_queue_time_seconds",
                "Time from a request's arrival in the queue to its first batch.",
                QUEUE_BUCKETS,
            )?,
            registry,
        })
    }

    pub fn observe_request(&self, model: &str, tokens: usize) {
        self.requests.with_label_values(&[model]).inc();
        self.tokens.with_label_values(&[model]).inc_by(tokens as u64);
    }

    pub fn observe_batch(&self, model: &str, inputs: usize) {
        self.batch_size.with_label_values(&[model]).observe(inputs as f64);
    }

    pub fn observe_queue_time(&self, model: &str, seconds: f64) {
        self.queue_time.with_label_values(&[model]).observe(seconds);
    }

    pub fn render(&self) -> anyhow::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8(buffer)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_the_model_label() {
        let metrics = EmbeddingMetrics::new().unwrap();
        metrics.observe_request("minilm", 7);
        metrics.observe_batch("minilm", 3);
        metrics.observe_queue_time("minilm", 0.002);
        let text = metrics.render().unwrap();
        assert!(text.contains("sconce_embedding_requests_total{model=\"minilm\"} 1"), "{text}");
        assert!(text.contains("sconce_embedding_tokens_total{model=\"minilm\"} 7"), "{text}");
        assert!(text.contains("sconce_embedding_batch_size_sum{model=\"minilm\"} 3"), "{text}");
        assert!(text.contains("sconce_embedding_queue_time_seconds_count{model=\"minilm\"} 1"), "{text}");
    }
}
