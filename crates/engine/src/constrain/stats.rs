//! How long constraint work takes: grammar compiles, per-sequence masks and per-step mask
//! wall time (what the forward pass had to hide), as cumulative histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram buckets, in microseconds (the last bucket is unbounded).
pub const BUCKETS_US: [u64; 14] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros() as u64;
        let bucket = BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(BUCKETS_US.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(|count| count.load(Ordering::Relaxed)).collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// Per-bucket counts (not cumulative), matching [`BUCKETS_US`] plus the overflow bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Default)]
pub struct MaskStats {
    /// One sequence's mask.
    pub per_token: Histogram,
    /// All masks of one step (wall time, in parallel).
    pub per_step: Histogram,
    /// A grammar compile (cache misses only).
    pub compile: Histogram,
    pub cache_hits: AtomicU64,
    /// Steps whose masks took longer than the forward pass they ran beside.
    pub exposed_steps: AtomicU64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaskStatsSnapshot {
    pub per_token: HistogramSnapshot,
    pub per_step: HistogramSnapshot,
    pub compile: HistogramSnapshot,
    pub cache_hits: u64,
    pub exposed_steps: u64,
}

impl MaskStats {
    /// `None`: served from the cache.
    pub fn note_compile(&self, elapsed: Option<Duration>) {
        match elapsed {
            Some(elapsed) => self.compile.observe(elapsed),
            None => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A step whose masks took longer than its forward pass exposed the difference.
    pub fn note_step(&self, forward: Duration, masks: Duration) {
        if masks > forward {
            self.exposed_steps.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> MaskStatsSnapshot {
        MaskStatsSnapshot {
            per_token: self.per_token.snapshot(),
            per_step: self.per_step.snapshot(),
            compile: self.compile.snapshot(),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            exposed_steps: self.exposed_steps.load(Ordering::Relaxed),
        }
    }
}
