//! Hugging Face Hub repositories, through hf-hub's blocking API and cache.

use std::fs;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::{hub_network_block, FetchError, FetchOptions};
use crate::catalog::HubSource;

const CONFIG: &str = "config.json";
const SINGLE_WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// Fetched when present; the last three are sentence-transformers' pooling and limits.
const OPTIONAL_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
];

fn hub_err(hub: &HubSource, reason: impl ToString) -> FetchError {
    FetchError::Hub { model: hub.repo.clone(), reason: reason.to_string() }
}

fn hub_repo(hub: &HubSource) -> Repo {
    match &hub.revision {
        Some(rev) => Repo::with_revision(hub.repo.clone(), RepoType::Model, rev.clone()),
        None => Repo::model(hub.repo.clone()),
    }
}

/// Fetches a Hub repository (or finds it in the local Hugging Face
/// cache) and returns its snapshot folder.
pub fn fetch_hub(hub: &HubSource, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    if let Some(dir) = cached_hub_snapshot(&hub_repo(hub)) {
        tracing::info!(model = %hub.repo, path = %dir.display(), "using the Hugging Face cache");
        return Ok(dir);
    }
    if let Some(why) = hub_network_block(opts) {
        return Err(hub_err(hub, format!("{why} and it is not in the local cache")));
    }
    download_hub_repo(hub, opts)
}

/// A cached snapshot with config.json and all weights, if present.
fn cached_hub_snapshot(repo: &Repo) -> Option<PathBuf> {
    let cache = Cache::from_env().repo(repo.clone());
    let dir = cache.get(CONFIG)?.parent()?.to_path_buf();
    if cache.get(SINGLE_WEIGHTS).is_some() {
        return Some(dir);
    }
    let shards = index_shards(&cache.get(WEIGHTS_INDEX)?).ok()?;
    shards.iter().all(|s| cache.get(s).is_some()).then_some(dir)
}

/// The shard file names listed in a safetensors index.
fn index_shards(index: &Path) -> Result<Vec<String>, String> {
    let text = fs::read_to_string(index).map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = json["weight_map"].as_object().ok_or("the index has no weight_map")?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str()).map(String::from).collect();
    shards.sort();
    shards.dedup();
    match shards.iter().find(|s| s.contains("..") || s.starts_with('/')) {
        Some(bad) => Err(format!("bad shard name `{bad}`")),
        None => Ok(shards),
    }
}

fn download_hub_repo(hub: &HubSource, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let mut builder = ApiBuilder::from_env().with_progress(!opts.quiet);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| hub_err(hub, e))?;
    let repo = api.repo(hub_repo(hub));
    let info = repo.info().map_err(|e| hub_err(hub, e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let has = |name: &str| files.iter().any(|f| f == name);
    let get = |name: &str| repo.get(name).map_err(|e| hub_err(hub, format!("{name}: {e}")));
    if !has(CONFIG) {
        return Err(hub_err(hub, "the repository has no config.json"));
    }
    let config = get(CONFIG)?;
    for name in OPTIONAL_FILES.iter().filter(|n| has(n)) {
        get(name)?;
    }
    if has(SINGLE_WEIGHTS) {
        get(SINGLE_WEIGHTS)?;
    } else if has(WEIGHTS_INDEX) {
        for shard in index_shards(&get(WEIGHTS_INDEX)?).map_err(|e| hub_err(hub, e))? {
            get(&shard)?;
        }
    } else {
        return Err(hub_err(hub, "the repository has no safetensors weights"));
    }
    let dir = config.parent().map(Path::to_path_buf);
    dir.ok_or_else(|| hub_err(hub, "bad cache path"))
}
