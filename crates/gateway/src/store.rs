//! The database behind keys and the ledger: SQLite (WAL) or Postgres through sqlx's
//! `Any` driver, migrated by the same files.

use std::borrow::Cow;
use std::path::Path;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row};

use crate::keys::ApiKey;
use crate::ledger::{RowState, UsageRecord};

mod usage_rows;

use usage_rows::{bind_usage_rows, merge_repeated_ids, usage_insert_sql, ROWS_PER_INSERT};

/// Applied migrations must never change: `tests/store.rs` pins their checksums.
const MIGRATIONS: [(i64, &str, &str); 7] = [
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "usage operation", include_str!("../migrations/0002_usage_operation.sql")),
    (3, "prompts", include_str!("../migrations/0003_prompts.sql")),
    (4, "key limits", include_str!("../migrations/0004_key_limits.sql")),
    (5, "ledger durability", include_str!("../migrations/0005_ledger_durability.sql")),
    (6, "semantic cache", include_str!("../migrations/0006_semantic_cache.sql")),
    (7, "usage tool calls", include_str!("../migrations/0007_usage_tool_calls.sql")),
];

/// A connection pool with the schema in place.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating when needed) `sqlite://…` or `postgres://…` and migrates it.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let url = if is_sqlite { prepare_sqlite(url)? } else { url.to_string() };
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn insert_key(&self, key: &ApiKey) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, alias, team, created_at, expires_at, models, rpm_limit, \
             tpm_limit, max_budget, budget_period, max_tokens, max_n, max_priority, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL)",
        )
        .bind(&key.id)
        .bind(&key.hash)
        .bind(&key.alias)
        .bind(&key.team)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.models.as_ref().map(|models| models.join(",")))
        .bind(key.rpm_limit.map(|v| v as i64))
        .bind(key.tpm_limit.map(|v| v as i64))
        .bind(key.max_budget)
        .bind(key.budget_period.map(|p| p.as_str()))
        .bind(key.max_tokens.map(|v| v as i64))
        .bind(key.max_n.map(|v| v as i64))
        .bind(key.max_priority.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every key, revoked ones included.
    pub async fn keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes by id or alias; returns how many keys it revoked.
    pub async fn revoke_key(&self, id_or_alias: &str, now: i64) -> anyhow::Result<u64> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR alias = $2) AND revoked_at IS NULL")
                .bind(now)
                .bind(id_or_alias)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Writes rows in one transaction: all of the batch or none of it.
    /// A completed row replaces its request's `admitted` row; an `admitted` row raises the
    /// tokens of one still admitted and leaves a completed one alone. A completed row written
    /// again as it was (a retried batch, a replayed spool) is ignored; another request under an
    /// id seen before (a client may resend its `x-request-id`) adds its tokens and cost to the
    /// existing row, so nothing goes unbilled.
    pub async fn insert_usage(&self, rows: &[UsageRecord]) -> anyhow::Result<()> {
        let rows = merge_repeated_ids(rows);
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let sql = usage_insert_sql(chunk.len());
            bind_usage_rows(sqlx::query(&sql), chunk).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks the rows of `request_ids` still `admitted` as `interrupted` (their process died);
    /// returns how many it marked.
    pub async fn mark_interrupted(&self, request_ids: &[String]) -> anyhow::Result<u64> {
        let mut marked = 0;
        for chunk in request_ids.chunks(ROWS_PER_INSERT) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE usage_ledger SET state = 'interrupted', finish_reason = 'interrupted' \
                 WHERE state = 'admitted' AND request_id IN ({})",
                list.join(", ")
            );
            let query = chunk.iter().fold(sqlx::query(&sql), |query, id| query.bind(id));
            marked += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(marked)
    }

    /// Ledger rows with `start <= ts < end`, optionally for one key.
    pub async fn usage(&self, start: i64, end: i64, key_id: Option<&str>) -> anyhow::Result<Vec<UsageRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM usage_ledger WHERE ts >= $1 AND ts < $2 AND ($3 = '' OR key_id = $3) ORDER BY ts",
        )
        .bind(start)
        .bind(end)
        .bind(key_id.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_from_row).collect()
    }

    /// Spend since `start` per key id and per team, to seed budget counters.
    pub async fn spend_since(&self, start: i64) -> anyhow::Result<Vec<(String, String, f64)>> {
        let rows = sqlx::query(
            "SELECT key_id, team, SUM(cost) AS spent FROM usage_ledger WHERE ts >= $1 GROUP BY key_id, team",
        )
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key_id")?, row.try_get("team")?, row.try_get::<f64, _>("spent")?)))
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Each migration's version and SHA-384 checksum (hex), as sqlx records them when applied.
pub fn migration_checksums() -> Vec<(i64, String)> {
    let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
    migrator().migrations.iter().map(|migration| (migration.version, hex(&migration.checksum))).collect()
}

/// Additive migrations; a database migrated by a newer binary (versions this one lacks)
/// still opens.
fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, name, sql)| {
            Migration::new(version, Cow::Borrowed(name), MigrationType::Simple, Cow::Borrowed(sql), false)
        })
        .collect();
    Migrator { migrations: Cow::Owned(migrations), ignore_missing: true, locking: true, no_tx: false }
}

/// Creates the database's folder and asks sqlx to create the file.
fn prepare_sqlite(url: &str) -> anyhow::Result<String> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or(path);
    if let Some(dir) = Path::new(path).parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") })
}

fn usage_from_row(row: &AnyRow) -> anyhow::Result<UsageRecord> {
    Ok(UsageRecord {
        request_id: row.try_get("request_id")?,
        ts: row.try_get("ts")?,
        operation: row.try_get("operation")?,
        model: row.try_get("model")?,
        key_id: row.try_get("key_id")?,
        key_alias: row.try_get("key_alias")?,
        team: row.try_get("team")?,
        user: row.try_get("user_id")?,
        status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or(0),
        finish_reason: row.try_get("finish_reason")?,
        prompt_tokens: row.try_get::<i64, _>("prompt_tokens")? as u64,
        completion_tokens: row.try_get::<i64, _>("completion_tokens")? as u64,
        cached_tokens: row.try_get::<i64, _>("cached_tokens")? as u64,
        cost: row.try_get("cost")?,
        ttft_s: row.try_get("ttft_s")?,
        tpot_s: row.try_get("tpot_s")?,
        latency_s: row.try_get("latency_s")?,
        overhead_s: row.try_get("overhead_s")?,
        prompt_name: row.try_get("prompt_name")?,
        prompt_version: u32::try_from(row.try_get::<i64, _>("prompt_version")?).unwrap_or(0),
        prompt_label: row.try_get("prompt_label")?,
        state: RowState::parse(&row.try_get::<String, _>("state")?),
        tool_calls: row.try_get::<i64, _>("tool_calls")? as u64,
    })
}

fn key_from_row(row: &AnyRow) -> anyhow::Result<ApiKey> {
    let opt_u64 =
        |name: &str| -> anyhow::Result<Option<u64>> { Ok(row.try_get::<Option<i64>, _>(name)?.map(|v| v as u64)) };
    let models: Option<String> = row.try_get("models")?;
    let period: Option<String> = row.try_get("budget_period")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        hash: row.try_get("key_hash")?,
        alias: row.try_get("alias")?,
        team: row.try_get("team")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        models: models.map(|models| models.split(',').map(str::to_string).collect()),
        rpm_limit: opt_u64("rpm_limit")?,
        tpm_limit: opt_u64("tpm_limit")?,
        max_budget: row.try_get("max_budget")?,
        budget_period: period.as_deref().and_then(crate::config::BudgetPeriod::parse),
        max_tokens: opt_u64("max_tokens")?,
        max_n: opt_u64("max_n")?,
        // Out of range (written by hand): the default, 0.
        max_priority: row.try_get::<Option<i64>, _>("max_priority")?.map(|v| i32::try_from(v).unwrap_or(0)),
        revoked_at: row.try_get("revoked_at")?,
    })
}
