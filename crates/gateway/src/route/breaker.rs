//! A circuit breaker per deployment: closed → open after too many failures → half-open
//! after a cooldown, where a few probes decide between closed and open again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Failure rate in the window that opens it (with at least `min_requests`); 0 turns it off.
    pub failure_rate: f64,
    pub min_requests: u32,
    /// Seconds of the rolling window for the rate.
    pub window_secs: u64,
    /// Seconds the breaker stays open before probing.
    pub cooldown_secs: f64,
    /// Probes let through while half-open; that many successes close it.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_rate: 0.5,
            min_requests: 10,
            window_secs: 30,
            cooldown_secs: 30.0,
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// 0 closed, 1 open, 2 half-open (the gauge's value).
    pub fn code(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive: u32,
    window_start: Instant,
    requests: u32,
    failures: u32,
    opened_at: Instant,
    probes_out: u32,
    probe_successes: u32,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let now = Instant::now();
        let inner = Inner {
            state: BreakerState::Closed,
            consecutive: 0,
            window_start: now,
            requests: 0,
            failures: 0,
            opened_at: now,
            probes_out: 0,
            probe_successes: 0,
        };
        Self { config, inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state now (an open breaker past its cooldown reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        inner.state
    }

    /// Whether a request may go to this deployment now; a half-open probe is taken.
    pub fn try_acquire(&self, now: Instant) -> bool {
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen if inner.probes_out < self.config.half_open_probes.max(1) => {
                inner.probes_out += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// Records how an acquired request went.
    pub fn record(&self, now: Instant, success: bool) {
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        match inner.state {
            BreakerState::HalfOpen => self.record_probe(&mut inner, now, success),
            BreakerState::Closed => self.record_closed(&mut inner, now, success),
            BreakerState::Open => {}
        }
    }

    fn record_probe(&self, inner: &mut Inner, now: Instant, success: bool) {
        inner.probes_out = inner.probes_out.saturating_sub(1);
        if !success {
            self.open(inner, now);
            return;
        }
        inner.probe_successes += 1;
        if inner.probe_successes >= self.config.half_open_probes.max(1) {
            *inner = Inner { state: BreakerState::Closed, window_start: now, ..Self::reset(inner) };
        }
    }

    fn reset(inner: &Inner) -> Inner {
        Inner { consecutive: 0, requests: 0, failures: 0, probes_out: 0, probe_successes: 0, ..*inner }
    }

    fn record_closed(&self, inner: &mut Inner, now: Instant, success: bool) {
        inner.requests += 1;
        if success {
            inner.consecutive = 0;
            return;
        }
        inner.failures += 1;
        inner.consecutive += 1;
        let config = &self.config;
        let by_count = config.failure_threshold > 0 && inner.consecutive >= config.failure_threshold;
        let rate = f64::from(inner.failures) / f64::from(inner.requests.max(1));
        let by_rate = config.failure_rate > 0.0 && inner.requests >= config.min_requests && rate >= config.failure_rate;
        if by_count || by_rate {
            self.open(inner, now);
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        *inner = Inner { state: BreakerState::Open, opened_at: now, ..Self::reset(inner) };
    }

    fn refresh(&self, inner: &mut Inner, now: Instant) {
        let window = Duration::from_secs(self.config.window_secs.max(1));
        if inner.state == BreakerState::Closed && now.duration_since(inner.window_start) >= window {
            inner.window_start = now;
            inner.requests = 0;
            inner.failures = 0;
        }
        let cooldown = Duration::from_secs_f64(self.config.cooldown_secs.max(0.0));
        if inner.state == BreakerState::Open && now.duration_since(inner.opened_at) >= cooldown {
            inner.state = BreakerState::HalfOpen;
            inner.probes_out = 0;
            inner.probe_successes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig { failure_threshold: 3, cooldown_secs: 10.0, ..BreakerConfig::default() })
    }

    #[test]
    fn opens_after_threshold_then_half_opens_and_closes() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.try_acquire(t0));
            b.record(t0, false);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.try_acquire(t0 + Duration::from_secs(5)));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later), "one probe");
        assert!(!b.try_acquire(later), "only one probe at a time");
        b.record(later, true);
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(t0, false);
        }
        let later = t0 + Duration::from_secs(10);
        assert!(b.try_acquire(later));
        b.record(later, false);
        assert_eq!(b.state(later), BreakerState::Open);
        assert!(!b.try_acquire(later + Duration::from_secs(9)));
    }

    #[test]
    fn rate_needs_min_requests() {
        let config =
            BreakerConfig { failure_threshold: 0, failure_rate: 0.5, min_requests: 4, ..BreakerConfig::default() };
        let b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        b.record(t0, false);
        b.record(t0, true);
        b.record(t0, false);
        assert_eq!(b.state(t0), BreakerState::Closed, "3 requests < min 4");
        b.record(t0, true);
        b.record(t0, false);
        assert_eq!(b.state(t0), BreakerState::Open);
    }
}
