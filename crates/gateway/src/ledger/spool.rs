//! The spool: an append-only local file where every admitted and completed row goes before
//! the database has it, so a `kill -9` loses none. Each process owns one slot
//! (`<path>.<n>`, locked through `<path>.<n>.lock`); at start it replays every slot no
//! live process holds. Lines are JSON rows, written with one `write` each (a killed process
//! leaves whole lines; a power cut may lose the page cache).
//!
//! A successful commit empties the file when nothing is pending; under steady load the
//! file is instead rotated to `<path>.<n>.old`, deleted once every row in it is committed.
//! Emptying and rotating start the new file with the admissions still in flight, so a
//! restart still knows which rows to mark `interrupted`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::{RowState, UsageRecord};
use crate::store::Store;

/// Slots tried at start (processes sharing one data dir).
const MAX_SLOTS: usize = 64;
/// The spool rotates beyond this size while rows are still pending.
const ROTATE_BYTES: u64 = 1 << 20;
/// Rows per transaction when replaying.
const REPLAY_BATCH: usize = 4096;

/// A rotated file and the last sequence number in it.
struct Rotated {
    last_seq: u64,
    /// Holds a row that was never committed: kept until the next start replays it.
    kept: bool,
}

/// This process's slot.
pub(super) struct Spool {
    active_path: PathBuf,
    old_path: PathBuf,
    active: File,
    active_bytes: u64,
    /// Bytes of in-flight admissions written at the top of the active file.
    dump_bytes: u64,
    active_kept: bool,
    old: Option<Rotated>,
    _lock: File,
}

fn slot_paths(base: &Path, slot: usize) -> (PathBuf, PathBuf, PathBuf) {
    let name = |suffix: &str| PathBuf::from(format!("{}.{slot}{suffix}", base.display()));
    (name(""), name(".old"), name(".lock"))
}

/// Opens for appending (every write lands at the end, also after `set_len(0)`).
fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Replays every slot that no live process holds and takes the first free one.
pub(super) async fn recover(store: &Store, base: &Path) -> anyhow::Result<Spool> {
    if let Some(dir) = base.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut mine = None;
    for slot in 0..MAX_SLOTS {
        let (active_path, old_path, lock_path) = slot_paths(base, slot);
        if mine.is_some() && !lock_path.exists() {
            break;
        }
        let lock = open_append(&lock_path)?;
        if lock.try_lock().is_err() {
            continue; // a live process holds it
        }
        let rows = read_rows(&old_path)?.into_iter().chain(read_rows(&active_path)?).collect::<Vec<_>>();
        replay(store, &rows).await?;
        let _ = std::fs::remove_file(&old_path);
        let active = open_append(&active_path)?;
        active.set_len(0)?;
        if mine.is_none() {
            mine = Some(Spool {
                active_path,
                old_path,
                active,
                active_bytes: 0,
                dump_bytes: 0,
                active_kept: false,
                old: None,
                _lock: lock,
            });
        }
    }
    mine.ok_or_else(|| anyhow::anyhow!("every ledger spool slot next to {} is held by a live process", base.display()))
}

/// The rows of one spool file; a line that does not parse is skipped with a warning.
fn read_rows(path: &Path) -> anyhow::Result<Vec<UsageRecord>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let mut rows = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        match serde_json::from_str::<UsageRecord>(&line) {
            Ok(row) => rows.push(row),
            Err(error) if !line.trim().is_empty() => tracing::warn!(%error, path = %path.display(), "bad spool line"),
            Err(_) => {}
        }
    }
    Ok(rows)
}

/// Writes spooled rows (idempotent: the upsert ignores what is already there), then marks
/// the requests whose last spooled row is an admission `interrupted`.
pub(super) async fn replay(store: &Store, rows: &[UsageRecord]) -> anyhow::Result<()> {
    for batch in rows.chunks(REPLAY_BATCH) {
        store.insert_usage(batch).await?;
    }
    let mut last: HashMap<&str, RowState> = HashMap::new();
    for row in rows {
        last.insert(&row.request_id, row.state);
    }
    let dangling: Vec<String> =
        last.into_iter().filter(|(_, state)| *state == RowState::Admitted).map(|(id, _)| id.to_string()).collect();
    if !rows.is_empty() {
        let marked = store.mark_interrupted(&dangling).await?;
        tracing::info!(rows = rows.len(), interrupted = marked, "ledger spool replayed");
    }
    Ok(())
}

impl Spool {
    /// Appends one row as one line.
    pub(super) fn append(&mut self, row: &UsageRecord) {
        let mut line = match serde_json::to_vec(row) {
            Ok(line) => line,
            Err(error) => return tracing::warn!(%error, "spool: row not serializable"),
        };
        line.push(b'\n');
        match self.active.write_all(&line) {
            Ok(()) => self.active_bytes += line.len() as u64,
            Err(error) => tracing::warn!(%error, "ledger spool write failed"),
        }
    }

    /// Keeps the file holding `seq` until the next start (its row was not committed).
    pub(super) fn keep(&mut self, seq: u64) {
        match &mut self.old {
            Some(old) if seq <= old.last_seq => old.kept = true,
            _ => self.active_kept = true,
        }
    }

    /// After a commit of every row up to `committed`, with `last_seq` the newest appended:
    /// drops the rotated file once it is all written, empties or rotates the active one.
    /// `in_flight` are the admissions to carry into a fresh file.
    pub(super) fn committed<'a>(
        &mut self,
        committed: u64,
        last_seq: u64,
        in_flight: impl Iterator<Item = &'a UsageRecord>,
    ) {
        if self.old.as_ref().is_some_and(|old| committed >= old.last_seq && !old.kept) {
            let _ = std::fs::remove_file(&self.old_path);
            self.old = None;
        }
        let appended_since_dump = self.active_bytes > self.dump_bytes;
        let all_written = committed >= last_seq && !self.active_kept;
        let too_big = self.active_bytes > ROTATE_BYTES.max(2 * self.dump_bytes);
        let result = if all_written && appended_since_dump && self.old.is_none() {
            self.restart(false, last_seq, in_flight)
        } else if too_big && self.old.is_none() {
            self.restart(true, last_seq, in_flight)
        } else {
            Ok(())
        };
        if let Err(error) = result {
            tracing::warn!(%error, "ledger spool rotation failed");
        }
    }

    /// Starts a fresh active file (rotating the current one first when `rotate`), holding
    /// the admissions in flight.
    fn restart<'a>(
        &mut self,
        rotate: bool,
        last_seq: u64,
        in_flight: impl Iterator<Item = &'a UsageRecord>,
    ) -> std::io::Result<()> {
        if rotate {
            std::fs::rename(&self.active_path, &self.old_path)?;
            self.old = Some(Rotated { last_seq, kept: self.active_kept });
            self.active = open_append(&self.active_path)?;
        } else {
            self.active.set_len(0)?;
        }
        (self.active_bytes, self.active_kept) = (0, false);
        for row in in_flight {
            self.append(row);
        }
        self.dump_bytes = self.active_bytes;
        Ok(())
    }
}
