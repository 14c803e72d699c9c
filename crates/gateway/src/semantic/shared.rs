//! The shared backend: entries are rows of `semantic_cache` in the gateway's Postgres
//! database; each replica loads the unexpired ones at start and adds those the others
//! store as their `NOTIFY` arrives (the payload is the row id).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::index::{Entry, Index};
use super::now_ms;

/// The `LISTEN`/`NOTIFY` channel.
pub const CHANNEL: &str = "sconce_semantic_cache";
/// How often expired rows (and rows beyond the bound) are deleted.
const SWEEP: Duration = Duration::from_secs(60);
const COLUMNS: &str = "id, partition_key, vector, response, expires_at";

/// The rows, and the task that keeps this replica's index in step with them.
pub struct SharedEntries {
    pool: PgPool,
    /// Stops the listener when the cache goes.
    _listening: DropGuard,
}

impl SharedEntries {
    /// Listens first, then loads the unexpired rows (newest `max_entries`), so no entry
    /// stored meanwhile is missed. The table comes from migration 0006.
    pub async fn open(url: &str, index: Arc<Index>, max_entries: usize) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        load_all(&pool, &index, max_entries).await?;
        let stop = CancellationToken::new();
        tokio::spawn(sweep(pool.clone(), index.clone(), max_entries, stop.clone()));
        tokio::spawn(follow(listener, pool.clone(), index, max_entries, stop.clone()));
        Ok(Self { pool, _listening: stop.drop_guard() })
    }

    /// Writes the row and tells the other replicas (a failure is logged: the entry stays
    /// in this replica's index).
    pub fn put(&self, entry: Entry, now: i64) -> BoxFuture<'static, ()> {
        let pool = self.pool.clone();
        Box::pin(async move {
            if let Err(error) = insert(&pool, &entry, now).await {
                tracing::warn!(%error, "semantic cache: storing the shared entry failed");
            }
        })
    }
}

async fn insert(pool: &PgPool, entry: &Entry, now: i64) -> sqlx::Result<()> {
    let response = std::str::from_utf8(&entry.response).unwrap_or_default();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO semantic_cache (id, partition_key, vector, response, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&entry.id)
    .bind(&entry.partition)
    .bind(vector_bytes(&entry.vector))
    .bind(response)
    .bind(now)
    .bind(entry.expires_at_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&entry.id).execute(&mut *tx).await?;
    tx.commit().await
}

/// Adds every notified row to the index; after a lost connection, reloads them all.
async fn follow(mut listener: PgListener, pool: PgPool, index: Arc<Index>, max: usize, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            next = listener.try_recv() => match next {
                Ok(Some(notification)) => load_one(&pool, &index, notification.payload()).await,
                Ok(None) => {
                    if let Err(error) = load_all(&pool, &index, max).await {
                        tracing::warn!(%error, "semantic cache: reloading shared entries failed");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "semantic cache: listening failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

async fn load_one(pool: &PgPool, index: &Index, id: &str) {
    if index.contains(id) {
        return;
    }
    let sql = format!("SELECT {COLUMNS} FROM semantic_cache WHERE id = $1");
    match sqlx::query(&sql).bind(id).fetch_optional(pool).await {
        Ok(Some(row)) => insert_row(index, &row),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "semantic cache: reading a shared entry failed"),
    }
}

/// The newest `max` unexpired rows, oldest first into the index.
async fn load_all(pool: &PgPool, index: &Index, max: usize) -> sqlx::Result<()> {
    let sql = format!("SELECT {COLUMNS} FROM semantic_cache WHERE expires_at > $1 ORDER BY created_at DESC LIMIT $2");
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    let rows = sqlx::query(&sql).bind(now_ms()).bind(limit).fetch_all(pool).await?;
    for row in rows.iter().rev() {
        insert_row(index, row);
    }
    Ok(())
}

fn insert_row(index: &Index, row: &PgRow) {
    match entry_from_row(row) {
        Ok(entry) => index.insert(entry, now_ms()),
        Err(error) => tracing::warn!(%error, "semantic cache: unreadable shared entry"),
    }
}

fn entry_from_row(row: &PgRow) -> sqlx::Result<Entry> {
    let response: String = row.try_get("response")?;
    Ok(Entry {
        id: row.try_get("id")?,
        partition: row.try_get("partition_key")?,
        vector: vector_from_bytes(&row.try_get::<Vec<u8>, _>("vector")?),
        response: Arc::new(response.into_bytes()),
        expires_at_ms: row.try_get("expires_at")?,
    })
}

/// Every [`SWEEP`]: deletes expired rows and those beyond the newest `max`, and drops
/// expired index entries.
async fn sweep(pool: PgPool, index: Arc<Index>, max: usize, stop: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        index.purge(now_ms());
        if let Err(error) = delete_old(&pool, max).await {
            tracing::debug!(%error, "semantic cache: sweeping shared entries failed");
        }
    }
}

async fn delete_old(pool: &PgPool, max: usize) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM semantic_cache WHERE expires_at <= $1").bind(now_ms()).execute(pool).await?;
    let beyond = "DELETE FROM semantic_cache WHERE id IN \
                  (SELECT id FROM semantic_cache ORDER BY created_at DESC OFFSET $1)";
    sqlx::query(beyond).bind(i64::try_from(max).unwrap_or(i64::MAX)).execute(pool).await?;
    Ok(())
}

/// f32 little-endian, 4 bytes a dimension.
pub fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}
