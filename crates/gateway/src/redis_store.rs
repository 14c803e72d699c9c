//! Redis-backed counters shared by replicas: GCRA buckets and spend.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Script;

use crate::limits::Verdict;

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

#[derive(Clone)]
pub struct RedisStore {
    conn: MultiplexedConnection,
    gcra: Script,
}

impl RedisStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), client.get_multiplexed_async_connection()).await??;
        Ok(Self { conn, gcra: Script::new(GCRA_LUA) })
    }

    pub async fn gcra(&self, bucket: &str, limit: u64, period_ms: u64, cells: u64) -> anyhow::Result<Verdict> {
        let mut conn = self.conn.clone();
        let (allowed, remaining, reset_ms): (i64, i64, i64) =
            self.gcra.key(bucket).arg(limit).arg(period_ms).arg(cells).invoke_async(&mut conn).await?;
        Ok(Verdict {
            allowed: allowed == 1,
            limit,
            remaining: remaining.max(0) as u64,
            reset: Duration::from_millis(reset_ms.max(0) as u64),
        })
    }

    /// Adds to a spend counter that expires after its period.
    pub async fn add_spend(&self, counter: &str, amount: f64, ttl_secs: u64) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("INCRBYFLOAT")
            .arg(counter)
            .arg(amount)
            .ignore()
            .cmd("EXPIRE")
            .arg(counter)
            .arg(ttl_secs)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    pub async fn spend(&self, counter: &str) -> anyhow::Result<f64> {
        let mut conn = self.conn.clone();
        let value: Option<f64> = redis::cmd("GET").arg(counter).query_async(&mut conn).await?;
        Ok(value.unwrap_or(0.0))
    }
}
