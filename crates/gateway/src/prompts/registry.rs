//! [`PromptRegistry`]: the stored prompts and their in-memory snapshot. Writes go to the
//! database and reload the snapshot at once; other processes see them on their next
//! [`PromptRegistry::refresh`] (the gateway calls it every two seconds).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use sconce_protocol::ApiError;
use serde::Serialize;
use tokio::sync::Mutex;

use super::book::PromptEntry;
use super::template::CompiledPrompt;
use super::{check_label, not_found, LabelSpec, NewPrompt, PromptBook, PromptDetail, PromptSummary, PromptVersion};
use super::{Split, VersionView};
use crate::store::Store;
use crate::usage::unix_now;

pub struct PromptRegistry {
    store: Store,
    book: RwLock<Arc<PromptBook>>,
    /// The database revision the snapshot was loaded at.
    revision: AtomicI64,
    /// One reload at a time, so an older snapshot never replaces a newer one.
    reloading: Mutex<()>,
}

/// A label after `PUT /admin/prompts/{name}/labels/{label}`.
#[derive(Debug, Clone, Serialize)]
pub struct LabelView {
    pub name: String,
    pub label: String,
    #[serde(flatten)]
    pub target: LabelSpec,
}

fn internal(error: anyhow::Error) -> ApiError {
    crate::GatewayError::Internal(error.context("prompt registry")).into()
}

fn prompt_missing(name: &str) -> ApiError {
    not_found("name", "prompt_not_found", format!("prompt `{name}` does not exist"))
}

impl PromptRegistry {
    /// Loads every stored prompt.
    pub async fn open(store: Store) -> anyhow::Result<Arc<Self>> {
        let registry = Arc::new(Self {
            store,
            book: RwLock::default(),
            revision: AtomicI64::new(i64::MIN),
            reloading: Mutex::new(()),
        });
        registry.reload().await?;
        Ok(registry)
    }

    /// The current snapshot (cheap: one `Arc` clone).
    pub fn snapshot(&self) -> Arc<PromptBook> {
        self.book.read().map(|book| book.clone()).unwrap_or_default()
    }

    /// Reloads when the database changed since the last load (elsewhere, e.g. another replica).
    pub async fn refresh(&self) -> anyhow::Result<()> {
        if self.store.prompt_revision().await? != self.revision.load(Ordering::Acquire) {
            self.reload().await?;
        }
        Ok(())
    }

    async fn reload(&self) -> anyhow::Result<()> {
        let _turn = self.reloading.lock().await;
        // The revision first: the rows read after it are at least that new.
        let revision = self.store.prompt_revision().await?;
        let (versions, labels) = (self.store.prompt_versions().await?, self.store.prompt_labels().await?);
        let book = Arc::new(PromptBook::build(&self.snapshot(), versions, labels));
        if let Ok(mut guard) = self.book.write() {
            *guard = book;
        }
        self.revision.store(revision, Ordering::Release);
        Ok(())
    }

    /// Stores a new version (templates checked first) and moves `new.labels` to it.
    pub async fn create(&self, new: NewPrompt) -> Result<VersionView, ApiError> {
        new.check()?;
        CompiledPrompt::compile(draft(&new))?;
        let stored = self.store.insert_prompt_version(&new, unix_now()).await.map_err(internal)?;
        self.reload().await.map_err(internal)?;
        self.view(&stored.name, stored.version)
    }

    /// Points a label at one version or splits it across several.
    pub async fn set_label(&self, name: &str, label: &str, target: LabelSpec) -> Result<LabelView, ApiError> {
        check_label("label", label)?;
        let split = split_of(&target)?;
        self.refresh().await.map_err(internal)?;
        let book = self.snapshot();
        let entry = book.get(name).ok_or_else(|| prompt_missing(name))?;
        if let Some(arm) = split.arms().iter().find(|arm| !entry.versions.contains_key(&arm.version)) {
            let message = format!("prompt `{name}` has no version {}", arm.version);
            return Err(not_found("version", "prompt_version_not_found", message));
        }
        self.store.set_prompt_label(name, label, &split, unix_now()).await.map_err(internal)?;
        self.reload().await.map_err(internal)?;
        Ok(LabelView { name: name.into(), label: label.into(), target })
    }

    pub async fn delete_label(&self, name: &str, label: &str) -> Result<(), ApiError> {
        check_label("label", label)?;
        self.refresh().await.map_err(internal)?;
        if self.snapshot().get(name).is_none() {
            return Err(prompt_missing(name));
        }
        if self.store.delete_prompt_label(name, label).await.map_err(internal)? == 0 {
            let message = format!("prompt `{name}` has no label `{label}`");
            return Err(not_found("label", "prompt_label_not_found", message));
        }
        self.reload().await.map_err(internal)
    }

    pub async fn list(&self) -> Result<Vec<PromptSummary>, ApiError> {
        self.refresh().await.map_err(internal)?;
        let book = self.snapshot();
        Ok(book.names().into_iter().filter_map(|name| book.get(name).map(|entry| summary(name, entry))).collect())
    }

    pub async fn show(&self, name: &str) -> Result<PromptDetail, ApiError> {
        self.refresh().await.map_err(internal)?;
        let book = self.snapshot();
        let entry = book.get(name).ok_or_else(|| prompt_missing(name))?;
        let versions = entry.versions.values().rev().map(|compiled| view_of(entry, compiled)).collect();
        Ok(PromptDetail { name: name.into(), latest_version: entry.latest(), labels: entry.label_specs(), versions })
    }

    fn view(&self, name: &str, version: u32) -> Result<VersionView, ApiError> {
        let book = self.snapshot();
        let entry = book.get(name).ok_or_else(|| prompt_missing(name))?;
        let compiled =
            entry.versions.get(&version).ok_or_else(|| internal(anyhow::anyhow!("{name}@{version} vanished")))?;
        Ok(view_of(entry, compiled))
    }
}

/// The version `new` would become, for checking its templates before storing it.
fn draft(new: &NewPrompt) -> PromptVersion {
    PromptVersion {
        name: new.name.clone(),
        version: 0,
        messages: new.messages.clone(),
        model: new.model.clone(),
        params: new.params.clone(),
        message: new.message.clone().unwrap_or_default(),
        created_at: 0,
    }
}

fn split_of(target: &LabelSpec) -> Result<Split, ApiError> {
    match (target.version, &target.split) {
        (Some(version), None) => Ok(Split::single(version)),
        (None, Some(weights)) => Split::new(weights),
        _ => {
            Err(ApiError::invalid_request("give either `version` or `split`, e.g. {\"split\": {\"3\": 90, \"4\": 10}}"))
        }
    }
}

fn view_of(entry: &PromptEntry, compiled: &CompiledPrompt) -> VersionView {
    VersionView {
        version: compiled.version.clone(),
        variables: compiled.variables.clone(),
        labels: entry.labels_on(compiled.version.version),
    }
}

fn summary(name: &str, entry: &PromptEntry) -> PromptSummary {
    PromptSummary {
        name: name.into(),
        latest_version: entry.latest(),
        versions: entry.versions.len(),
        labels: entry.label_specs(),
        updated_at: entry.updated_at,
    }
}
