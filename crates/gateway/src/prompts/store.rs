//! The registry's tables (migration 0003): `prompt_versions`, `prompt_labels` (one row
//! per arm of a label) and `prompt_revision`, which every write bumps in its transaction,
//! so replicas reload only after a change and concurrent writers take turns.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{NewPrompt, PromptVersion, Split};
use crate::store::Store;

/// One arm of a stored label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    pub name: String,
    pub label: String,
    pub version: u32,
    pub weight: u32,
    pub updated_at: i64,
}

impl Store {
    /// The registry's revision: it changes with every write.
    pub async fn prompt_revision(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT revision FROM prompt_revision WHERE id = 1").fetch_optional(self.pool()).await?;
        Ok(row.map(|row| row.try_get("revision")).transpose()?.unwrap_or(0))
    }

    pub async fn prompt_versions(&self) -> anyhow::Result<Vec<PromptVersion>> {
        let rows = sqlx::query("SELECT * FROM prompt_versions ORDER BY name, version").fetch_all(self.pool()).await?;
        rows.iter().map(version_from_row).collect()
    }

    pub async fn prompt_labels(&self) -> anyhow::Result<Vec<LabelRow>> {
        let rows =
            sqlx::query("SELECT * FROM prompt_labels ORDER BY name, label, version").fetch_all(self.pool()).await?;
        rows.iter().map(label_from_row).collect()
    }

    /// Stores the next version of `new.name` (1 for a new name) and points `new.labels` at it.
    pub async fn insert_prompt_version(&self, new: &NewPrompt, now: i64) -> anyhow::Result<PromptVersion> {
        let mut tx = self.pool().begin().await?;
        bump_revision(&mut tx).await?;
        let latest: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS latest FROM prompt_versions WHERE name = $1")
                .bind(&new.name)
                .fetch_one(&mut *tx)
                .await?
                .try_get("latest")?;
        let version = PromptVersion {
            name: new.name.clone(),
            version: u32::try_from(latest + 1)?,
            messages: new.messages.clone(),
            model: new.model.clone(),
            params: new.params.clone(),
            message: new.message.clone().unwrap_or_default(),
            created_at: now,
        };
        sqlx::query(
            "INSERT INTO prompt_versions (name, version, messages, model, params, commit_message, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&version.name)
        .bind(i64::from(version.version))
        .bind(serde_json::to_string(&version.messages)?)
        .bind(&version.model)
        .bind(serde_json::to_string(&version.params)?)
        .bind(&version.message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for label in &new.labels {
            replace_label(&mut tx, &version.name, label, &Split::single(version.version), now).await?;
        }
        tx.commit().await?;
        Ok(version)
    }

    /// Points `label` of `name` at `split`'s versions (the caller checks they exist).
    pub async fn set_prompt_label(&self, name: &str, label: &str, split: &Split, now: i64) -> anyhow::Result<()> {
        let mut tx = self.pool().begin().await?;
        bump_revision(&mut tx).await?;
        replace_label(&mut tx, name, label, split, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a label; returns how many arms it had (0: there was no such label).
    pub async fn delete_prompt_label(&self, name: &str, label: &str) -> anyhow::Result<u64> {
        let mut tx = self.pool().begin().await?;
        bump_revision(&mut tx).await?;
        let done = sqlx::query("DELETE FROM prompt_labels WHERE name = $1 AND label = $2")
            .bind(name)
            .bind(label)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}

/// Takes the registry's write turn (a row lock on Postgres, the write lock on SQLite).
async fn bump_revision(conn: &mut AnyConnection) -> anyhow::Result<()> {
    sqlx::query("UPDATE prompt_revision SET revision = revision + 1 WHERE id = 1").execute(&mut *conn).await?;
    Ok(())
}

async fn replace_label(
    conn: &mut AnyConnection,
    name: &str,
    label: &str,
    split: &Split,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM prompt_labels WHERE name = $1 AND label = $2")
        .bind(name)
        .bind(label)
        .execute(&mut *conn)
        .await?;
    for arm in split.arms() {
        sqlx::query("INSERT INTO prompt_labels (name, label, version, weight, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(name)
            .bind(label)
            .bind(i64::from(arm.version))
            .bind(i64::from(arm.weight))
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn version_from_row(row: &AnyRow) -> anyhow::Result<PromptVersion> {
    let messages: String = row.try_get("messages")?;
    let params: String = row.try_get("params")?;
    Ok(PromptVersion {
        name: row.try_get("name")?,
        version: u32::try_from(row.try_get::<i64, _>("version")?)?,
        messages: serde_json::from_str(&messages)?,
        model: row.try_get("model")?,
        params: serde_json::from_str(&params)?,
        message: row.try_get("commit_message")?,
        created_at: row.try_get("created_at")?,
    })
}

fn label_from_row(row: &AnyRow) -> anyhow::Result<LabelRow> {
    Ok(LabelRow {
        name: row.try_get("name")?,
        label: row.try_get("label")?,
        version: u32::try_from(row.try_get::<i64, _>("version")?)?,
        weight: u32::try_from(row.try_get::<i64, _>("weight")?)?,
        updated_at: row.try_get("updated_at")?,
    })
}
