//! Per-key RPM and TPM with GCRA: governor in-process, or a Lua GCRA in Redis so that
//! every replica shares one limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::redis_store::RedisStore;

type Gcra =
    RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Per (key, unit): the limit the bucket was built for, and the bucket.
type Buckets = HashMap<(String, Unit), Arc<(u64, Gcra)>>;

/// One limit decision, enough for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Time until the bucket is full again (or until the request fits, when refused).
    pub reset: Duration,
}

/// Which budget of a key a cell counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// RPM and TPM buckets for all keys.
pub struct RateLimits {
    local: Mutex<Buckets>,
    redis: Option<RedisStore>,
    /// One clock for all buckets: building a quanta clock runs CPUID, which traps in VMs.
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(redis: Option<RedisStore>) -> Self {
        Self { local: Mutex::new(HashMap::new()), redis, clock: DefaultClock::default() }
    }

    /// Takes `cells` from the key's per-minute bucket of `limit`; a limit of 0 lets nothing through.
    pub async fn take(&self, key_id: &str, unit: Unit, limit: u64, cells: u64) -> Verdict {
        if limit == 0 {
            return refused(0, Duration::from_secs(60));
        }
        let cells = cells.clamp(1, limit.max(1));
        if let Some(redis) = &self.redis {
            let name = format!("sconce:rl:{}:{key_id}", unit.as_str());
            match redis.gcra(&name, limit, 60_000, cells).await {
                Ok(verdict) => return verdict,
                Err(error) => tracing::warn!(%error, "redis rate limit failed; using the local limit"),
            }
        }
        self.take_local(key_id, unit, limit, cells)
    }

    fn take_local(&self, key_id: &str, unit: Unit, limit: u64, cells: u64) -> Verdict {
        let bucket = self.bucket(key_id, unit, limit);
        let Some(n) = NonZeroU32::new(u32::try_from(cells).unwrap_or(u32::MAX)) else {
            return open(limit);
        };
        match bucket.1.check_n(n) {
            Ok(Ok(state)) => Verdict {
                allowed: true,
                limit,
                remaining: u64::from(state.remaining_burst_capacity()),
                reset: Duration::from_secs(60).mul_f64(used_share(state.remaining_burst_capacity(), limit)),
            },
            Ok(Err(not_until)) => refused(limit, not_until.wait_time_from(self.clock.now())),
            Err(_) => refused(limit, Duration::from_secs(60)),
        }
    }

    fn bucket(&self, key_id: &str, unit: Unit, limit: u64) -> Arc<(u64, Gcra)> {
        let mut map = match self.local.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let slot = map.entry((key_id.to_string(), unit)).or_insert_with(|| Arc::new((limit, gcra(limit, &self.clock))));
        if slot.0 != limit {
            *slot = Arc::new((limit, gcra(limit, &self.clock)));
        }
        slot.clone()
    }
}

fn gcra(limit: u64, clock: &DefaultClock) -> Gcra {
    let per_minute = NonZeroU32::new(u32::try_from(limit).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_minute(per_minute), clock.clone())
        .with_middleware::<StateInformationMiddleware>()
}

/// The share of the bucket in use, in [0, 1] (a Duration cannot be scaled by NaN or < 0).
fn used_share(remaining: u32, limit: u64) -> f64 {
    (1.0 - f64::from(remaining) / limit.max(1) as f64).clamp(0.0, 1.0)
}

fn open(limit: u64) -> Verdict {
    Verdict { allowed: true, limit, remaining: limit, reset: Duration::ZERO }
}

fn refused(limit: u64, wait: Duration) -> Verdict {
    Verdict { allowed: false, limit, remaining: 0, reset: wait }
}

/// `x-ratelimit-*` headers as OpenAI sends them, e.g. `x-ratelimit-reset-requests: 12s`.
pub fn headers(unit: Unit, verdict: &Verdict) -> [(&'static str, String); 3] {
    let (limit, remaining, reset) = match unit {
        Unit::Requests => {
            ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
        }
        Unit::Tokens => ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    };
    [
        (limit, verdict.limit.to_string()),
        (remaining, verdict.remaining.to_string()),
        (reset, format!("{:.3}s", verdict.reset.as_secs_f64())),
    ]
}

/// Whole seconds to wait, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_rpm_of_five_lets_five_through() {
        let limits = RateLimits::new(None);
        for _ in 0..5 {
            assert!(limits.take("k", Unit::Requests, 5, 1).await.allowed);
        }
        let sixth = limits.take("k", Unit::Requests, 5, 1).await;
        assert!(!sixth.allowed);
        assert!(sixth.reset > Duration::from_secs(5) && sixth.reset <= Duration::from_secs(12));
        assert!(limits.take("other", Unit::Requests, 5, 1).await.allowed);
    }

    #[tokio::test]
    async fn a_limit_of_zero_refuses_without_panicking() {
        let limits = RateLimits::new(None);
        for unit in [Unit::Requests, Unit::Tokens] {
            let verdict = limits.take("zero", unit, 0, 1).await;
            assert!(!verdict.allowed && verdict.remaining == 0 && verdict.reset >= Duration::from_secs(1));
        }
        assert_eq!(used_share(7, 0), 0.0);
    }
}
