//! `sconce:semantic_cache_hits_total`, `…_misses_total`, the best neighbour's similarity on
//! each lookup, and the lookup's latency (embedding and search).

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use crate::names::ModelNames;

#[derive(Clone)]
pub struct SemanticMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    similarity: Histogram,
    lookup: Histogram,
    /// Bounds the `model` label (a client's unknown name counts as `other`).
    names: Arc<ModelNames>,
}

impl SemanticMetrics {
    pub fn new(registry: &Registry, names: Arc<ModelNames>) -> prometheus::Result<Self> {
        let hits =
            IntCounterVec::new(Opts::new("sconce:semantic_cache_hits_total", "Semantic cache hits."), &["model"])?;
        let misses =
            IntCounterVec::new(Opts::new("sconce:semantic_cache_misses_total", "Semantic cache misses."), &["model"])?;
        let buckets = vec![0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0];
        let similarity = Histogram::with_opts(
            HistogramOpts::new(
                "sconce:semantic_cache_similarity",
                "Cosine similarity of the nearest cached question on each lookup.",
            )
            .buckets(buckets),
        )?;
        let buckets = vec![0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25];
        let lookup = Histogram::with_opts(
            HistogramOpts::new("sconce:semantic_cache_lookup_seconds", "Semantic cache lookups: embedding and search.")
                .buckets(buckets),
        )?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        registry.register(Box::new(similarity.clone()))?;
        registry.register(Box::new(lookup.clone()))?;
        Ok(Self { hits, misses, similarity, lookup, names })
    }

    pub fn observe_lookup(&self, model: &str, hit: bool, similarity: Option<f32>, seconds: f64) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.with_label_values(&[self.names.label(model)]).inc();
        if let Some(similarity) = similarity {
            self.similarity.observe(f64::from(similarity));
        }
        self.lookup.observe(seconds);
    }
}
