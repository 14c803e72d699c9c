//! Where cache entries live: in-process (moka) or Redis. A store failure is a miss.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

pub trait CacheStore: Send + Sync + 'static {
    fn get(&self, key: String) -> BoxFuture<'static, Option<Arc<Vec<u8>>>>;
    fn put(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, ()>;
}

/// moka, bounded by total bytes, entries expire after the TTL.
pub struct MemoryStore {
    cache: moka::future::Cache<String, Arc<Vec<u8>>>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Arc<Vec<u8>>| u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX))
            .time_to_live(ttl)
            .build();
        Self { cache }
    }
}

impl CacheStore for MemoryStore {
    fn get(&self, key: String) -> BoxFuture<'static, Option<Arc<Vec<u8>>>> {
        let cache = self.cache.clone();
        Box::pin(async move { cache.get(&key).await })
    }

    fn put(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, ()> {
        let cache = self.cache.clone();
        Box::pin(async move { cache.insert(key, Arc::new(value)).await })
    }
}

/// Redis, shared between replicas; `SET .. PX ttl`. Connects on first use.
pub struct RedisStore {
    client: redis::Client,
    conn: Arc<OnceCell<redis::aio::MultiplexedConnection>>,
    ttl_ms: u64,
}

/// Longest a cache lookup or write may take before it counts as a miss.
const REDIS_DEADLINE: Duration = Duration::from_millis(500);

impl RedisStore {
    pub fn new(url: &str, ttl: Duration) -> Result<Self, crate::GatewayError> {
        let client =
            redis::Client::open(url).map_err(|e| crate::GatewayError::config(format!("redis url `{url}`: {e}")))?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        Ok(Self { client, conn: Arc::default(), ttl_ms })
    }

    async fn connection(
        client: redis::Client,
        cell: Arc<OnceCell<redis::aio::MultiplexedConnection>>,
    ) -> Option<redis::aio::MultiplexedConnection> {
        let init = || async move { client.get_multiplexed_async_connection().await };
        match cell.get_or_try_init(init).await {
            Ok(conn) => Some(conn.clone()),
            Err(error) => {
                tracing::warn!(%error, "redis cache unreachable");
                None
            }
        }
    }
}

impl CacheStore for RedisStore {
    fn get(&self, key: String) -> BoxFuture<'static, Option<Arc<Vec<u8>>>> {
        let (client, cell) = (self.client.clone(), self.conn.clone());
        Box::pin(async move {
            let lookup = async {
                let mut conn = Self::connection(client, cell).await?;
                let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.ok()?;
                value.map(Arc::new)
            };
            tokio::time::timeout(REDIS_DEADLINE, lookup).await.ok().flatten()
        })
    }

    fn put(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, ()> {
        let (client, cell, ttl) = (self.client.clone(), self.conn.clone(), self.ttl_ms);
        Box::pin(async move {
            let write = async {
                let Some(mut conn) = Self::connection(client, cell).await else { return };
                let done: redis::RedisResult<()> =
                    redis::cmd("SET").arg(&key).arg(value).arg("PX").arg(ttl).query_async(&mut conn).await;
                if let Err(error) = done {
                    tracing::warn!(%error, "redis cache write failed");
                }
            };
            let _ = tokio::time::timeout(REDIS_DEADLINE, write).await;
        })
    }
}
