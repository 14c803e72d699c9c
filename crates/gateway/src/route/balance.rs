//! Load balancing inside a group: least outstanding requests, or power of two choices
//! over peak-EWMA latency, optionally weighted by an upstream's KV-cache load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    LeastOutstanding,
    /// Power of two choices with peak-EWMA latency.
    P2cPeakEwma,
}

/// Decay time of the latency average, in seconds.
const EWMA_DECAY_SECS: f64 = 10.0;

#[derive(Debug)]
struct Ewma {
    value_ms: f64,
    at: Instant,
}

/// Live load of one deployment.
#[derive(Debug)]
pub struct Load {
    outstanding: AtomicUsize,
    ewma: Mutex<Ewma>,
    /// `sconce:num_requests_waiting` from the upstream's /metrics.
    waiting: AtomicUsize,
    /// `sconce:kv_cache_usage_perc` × 1e6.
    kv_usage_micros: AtomicU64,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            outstanding: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma { value_ms: 0.0, at: Instant::now() }),
            waiting: AtomicUsize::new(0),
            kv_usage_micros: AtomicU64::new(0),
        }
    }
}

/// Counts a request as outstanding until dropped.
pub struct LoadGuard(Arc<Load>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Load {
    pub fn start(self: &Arc<Self>) -> LoadGuard {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        LoadGuard(self.clone())
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Peak-EWMA: a slower sample takes over at once, faster ones decay in.
    pub fn observe_latency(&self, now: Instant, millis: f64) {
        let mut ewma = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        if millis > ewma.value_ms {
            ewma.value_ms = millis;
        } else {
            let elapsed = now.saturating_duration_since(ewma.at).as_secs_f64();
            let weight = (-elapsed / EWMA_DECAY_SECS).exp();
            ewma.value_ms = ewma.value_ms * weight + millis * (1.0 - weight);
        }
        ewma.at = now;
    }

    pub fn latency_ms(&self) -> f64 {
        self.ewma.lock().map_or(0.0, |e| e.value_ms)
    }

    /// The upstream's last reported queue length and KV-cache use (0..=1).
    pub fn upstream(&self) -> (usize, f64) {
        let kv = self.kv_usage_micros.load(Ordering::Acquire) as f64 / 1e6;
        (self.waiting.load(Ordering::Acquire), kv)
    }

    pub fn set_upstream(&self, waiting: usize, kv_usage: f64) {
        self.waiting.store(waiting, Ordering::Release);
        self.kv_usage_micros.store((kv_usage.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Release);
    }

    /// Lower is better.
    fn cost(&self, strategy: Strategy, kv_aware: bool) -> f64 {
        let pending = self.outstanding() as f64 + 1.0;
        let mut cost = match strategy {
            Strategy::LeastOutstanding => pending,
            Strategy::P2cPeakEwma => (self.latency_ms() + 1.0) * pending,
        };
        if kv_aware {
            let (waiting, kv) = self.upstream();
            cost *= 1.0 + waiting as f64 + 4.0 * kv * kv;
        }
        cost
    }
}

/// A cheap, lock-free random number for P2C (xorshift on a shared counter).
fn random(bound: usize) -> usize {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x % bound.max(1) as u64) as usize
}

/// Orders the available deployments `candidates` (indices into `loads`) best first.
pub fn order(loads: &[&Load], candidates: &mut [usize], strategy: Strategy, kv_aware: bool) {
    if candidates.len() < 2 {
        return;
    }
    let first = match strategy {
        Strategy::LeastOutstanding => best_of(loads, candidates, strategy, kv_aware),
        Strategy::P2cPeakEwma => {
            let a = random(candidates.len());
            let b = (a + 1 + random(candidates.len() - 1)) % candidates.len();
            let (ca, cb) =
                (loads[candidates[a]].cost(strategy, kv_aware), loads[candidates[b]].cost(strategy, kv_aware));
            if ca <= cb {
                a
            } else {
                b
            }
        }
    };
    candidates.swap(0, first);
}

fn best_of(loads: &[&Load], candidates: &[usize], strategy: Strategy, kv_aware: bool) -> usize {
    let mut best = 0;
    let mut best_cost = f64::INFINITY;
    for (i, &c) in candidates.iter().enumerate() {
        let cost = loads[c].cost(strategy, kv_aware);
        if cost < best_cost {
            best = i;
            best_cost = cost;
        }
    }
    best
}

/// Reads `sconce:num_requests_waiting` and `sconce:kv_cache_usage_perc` from a /metrics body.
pub fn parse_upstream_metrics(body: &str) -> (usize, f64) {
    let mut waiting = 0.0;
    let mut kv = 0.0;
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let series = name.split('{').next().unwrap_or(name);
        match series {
            "sconce:num_requests_waiting" => waiting += value,
            "sconce:kv_cache_usage_perc" => kv = f64::max(kv, value),
            _ => {}
        }
    }
    (waiting as usize, kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_outstanding_picks_the_idle_one() {
        let (a, b) = (Arc::new(Load::default()), Load::default());
        let _busy = a.start();
        let mut candidates = vec![0, 1];
        order(&[&a, &b], &mut candidates, Strategy::LeastOutstanding, false);
        assert_eq!(candidates[0], 1);
    }

    #[test]
    fn p2c_prefers_the_fast_one_of_two() {
        let (a, b) = (Load::default(), Load::default());
        a.observe_latency(Instant::now(), 500.0);
        b.observe_latency(Instant::now(), 5.0);
        for _ in 0..20 {
            let mut candidates = vec![0, 1];
            order(&[&a, &b], &mut candidates, Strategy::P2cPeakEwma, false);
            assert_eq!(candidates[0], 1);
        }
    }

    #[test]
    fn kv_load_steers_away() {
        let (a, b) = (Load::default(), Load::default());
        a.set_upstream(8, 0.95);
        let mut candidates = vec![0, 1];
        order(&[&a, &b], &mut candidates, Strategy::LeastOutstanding, true);
        assert_eq!(candidates[0], 1);
    }

    #[test]
    fn metrics_parse() {
        let body = "# HELP x\nsconce:num_requests_waiting{model_name=\"m\"} 3\nsconce:kv_cache_usage_perc{model_name=\"m\"} 0.25\n";
        assert_eq!(parse_upstream_metrics(body), (3, 0.25));
    }
}
