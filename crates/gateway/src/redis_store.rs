//! Redis-backed counters shared by replicas: GCRA buckets, spend and budget holds.
//!
//! Every call has a response timeout; the connection reconnects with backoff. A failed or
//! timed-out call marks the store down (counted in `sconce_gateway_shared_state_errors_total`),
//! and while it is down calls fail at once; a probe pings every [`PROBE_INTERVAL`] and marks
//! it up again when Redis answers, so a restarted Redis is picked up without a restart.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::anyhow;
use prometheus::{IntCounterVec, Opts, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use crate::limits::Verdict;

/// How often a down store is probed (and an up one checked).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// GCRA on Redis time. KEYS[1]: bucket; ARGV: limit, period_ms, cells.
/// Returns {allowed, remaining, reset_ms}.
const GCRA_LUA: &str = r#"
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cells = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cells * interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], math.ceil(new_tat), 'PX', math.ceil(new_tat - now) + 1)
local remaining = math.floor((period - (new_tat - now)) / interval)
return {1, remaining, math.ceil(new_tat - now)}
"#;

/// Check and reserve in one step. KEYS: spend_1, held_1, ..., spend_n, held_n;
/// ARGV: amount, held_ttl_secs, max_1, ..., max_n. Refuses (returns i, the first limit
/// crossed) when spend plus holds is already at the limit or the amount would cross it;
/// otherwise adds the amount to every hold and returns 0.
const RESERVE_LUA: &str = r#"
local amount = tonumber(ARGV[1])
local n = #KEYS / 2
for i = 1, n do
  local spent = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local held = math.max(tonumber(redis.call('GET', KEYS[2 * i]) or '0'), 0)
  local max = tonumber(ARGV[2 + i])
  if spent + held >= max or spent + held + amount > max then
    return i
  end
end
for i = 1, n do
  redis.call('INCRBYFLOAT', KEYS[2 * i], ARGV[1])
  redis.call('EXPIRE', KEYS[2 * i], ARGV[2])
end
return 0
"#;

/// Releases a hold and books the actual cost in one step. KEYS: held_1..held_h, then the
/// spend counters; ARGV: h, -reserved, actual, spend_ttl_secs.
const SETTLE_LUA: &str = r#"
local h = tonumber(ARGV[1])
for i = 1, h do
  local left = tonumber(redis.call('INCRBYFLOAT', KEYS[i], ARGV[2]))
  if left <= 1e-12 then redis.call('DEL', KEYS[i]) end
end
if tonumber(ARGV[3]) > 0 then
  for i = h + 1, #KEYS do
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[3])
    redis.call('EXPIRE', KEYS[i], ARGV[4])
  end
end
return 0
"#;

/// One limit to check at reservation: the spend and hold counters and the budget.
pub struct ReserveSlot {
    pub spend: String,
    pub held: String,
    pub max: f64,
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    timeout: Duration,
    up: AtomicBool,
    errors: Option<IntCounterVec>,
    gcra: Script,
    reserve: Script,
    settle: Script,
}

impl RedisStore {
    /// Connects with the default 250 ms timeout and no metrics (tools, tests).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, Duration::from_millis(250), None).await
    }

    /// Connects (failing after 5 s), with `timeout` on every later call; registers the
    /// error counter in `registry` and starts the probe.
    pub async fn connect_with(url: &str, timeout: Duration, registry: Option<&Registry>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(timeout)
            .set_connection_timeout(timeout.max(Duration::from_millis(100)))
            .set_number_of_retries(3)
            .set_factor(50)
            .set_max_delay(2_000);
        let conn = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| anyhow!("redis at {url} did not answer within 5 s"))??;
        let errors = registry.map(register_errors).transpose()?;
        let inner = Arc::new(Inner {
            conn,
            timeout,
            up: AtomicBool::new(true),
            errors,
            gcra: Script::new(GCRA_LUA),
            reserve: Script::new(RESERVE_LUA),
            settle: Script::new(SETTLE_LUA),
        });
        tokio::spawn(probe(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// False after a call failed or timed out, until the probe reaches Redis again.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub async fn gcra(&self, bucket: &str, limit: u64, period_ms: u64, cells: u64) -> anyhow::Result<Verdict> {
        let mut invocation = self.inner.gcra.key(bucket);
        invocation.arg(limit).arg(period_ms).arg(cells);
        let (allowed, remaining, reset_ms): (i64, i64, i64) =
            self.inner.run("rate_limit", invocation.invoke_async(&mut self.inner.conn.clone())).await?;
        Ok(Verdict {
            allowed: allowed == 1,
            limit,
            remaining: remaining.max(0) as u64,
            reset: Duration::from_millis(reset_ms.max(0) as u64),
        })
    }

    /// Checks every slot and, when none would be crossed, holds `amount` on all of them:
    /// one atomic script. Returns the index of the first slot crossed, if any.
    pub async fn reserve(
        &self,
        slots: &[ReserveSlot],
        amount: f64,
        held_ttl_secs: u64,
    ) -> anyhow::Result<Option<usize>> {
        let mut invocation = self.inner.reserve.prepare_invoke();
        for slot in slots {
            invocation.key(&slot.spend).key(&slot.held);
        }
        invocation.arg(amount.to_string()).arg(held_ttl_secs);
        for slot in slots {
            invocation.arg(slot.max.to_string());
        }
        let crossed: i64 = self.inner.run("reserve", invocation.invoke_async(&mut self.inner.conn.clone())).await?;
        Ok(usize::try_from(crossed).ok().filter(|&i| i > 0).map(|i| i - 1))
    }

    /// Releases `reserved` from each hold counter and adds `actual` to each spend counter:
    /// one atomic script.
    pub async fn settle(
        &self,
        held: &[String],
        spend: &[String],
        reserved: f64,
        actual: f64,
        ttl_secs: u64,
    ) -> anyhow::Result<()> {
        let mut invocation = self.inner.settle.prepare_invoke();
        for counter in held.iter().chain(spend) {
            invocation.key(counter);
        }
        invocation.arg(held.len()).arg((-reserved).to_string()).arg(actual.to_string()).arg(ttl_secs);
        self.inner.run::<i64>("settle", invocation.invoke_async(&mut self.inner.conn.clone())).await?;
        Ok(())
    }

    /// Adds to spend counters that expire after their period.
    pub async fn add_spend(&self, counter: &str, amount: f64, ttl_secs: u64) -> anyhow::Result<()> {
        self.settle(&[], &[counter.to_string()], 0.0, amount, ttl_secs).await
    }

    pub async fn spend(&self, counter: &str) -> anyhow::Result<f64> {
        let command = redis::cmd("GET").arg(counter).to_owned();
        let value: Option<f64> =
            self.inner.run("read", async move { command.query_async(&mut self.inner.conn.clone()).await }).await?;
        Ok(value.unwrap_or(0.0))
    }
}

impl Inner {
    /// Runs one call with the timeout; fails at once while the store is down.
    async fn run<T>(&self, op: &str, call: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(self.failed(op, anyhow!("redis is unreachable (waiting for the probe to reach it)")));
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.failed(op, error.into())),
            Err(_) => Err(self.failed(op, anyhow!("redis did not answer within {:?}", self.timeout))),
        }
    }

    fn failed(&self, op: &str, error: anyhow::Error) -> anyhow::Error {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "shared state (redis) is down");
        }
        if let Some(errors) = &self.errors {
            errors.with_label_values(&[op]).inc();
        }
        error
    }

    async fn ping(&self) -> bool {
        let ping = redis::cmd("PING").to_owned();
        let answer = tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut self.conn.clone())).await;
        matches!(answer, Ok(Ok(_)))
    }
}

/// Pings Redis while the store lives: marks it down when a ping fails, up when one answers.
async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let answered = inner.ping().await;
        let was_up = inner.up.swap(answered, Ordering::Relaxed);
        match (was_up, answered) {
            (false, true) => tracing::info!("shared state (redis) is reachable again"),
            (true, false) => {
                tracing::warn!("shared state (redis) is down: a ping failed");
                if let Some(errors) = &inner.errors {
                    errors.with_label_values(&["probe"]).inc();
                }
            }
            _ => {}
        }
    }
}

fn register_errors(registry: &Registry) -> anyhow::Result<IntCounterVec> {
    let errors = IntCounterVec::new(
        Opts::new("sconce_gateway_shared_state_errors_total", "Failed or timed-out Redis calls, by operation"),
        &["op"],
    )?;
    registry.register(Box::new(errors.clone()))?;
    Ok(errors)
}
