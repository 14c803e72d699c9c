//! What the request path and the writer share: the requests in flight (keyed by their
//! journal, removed on completion) and the spool, under one lock so that the spool's
//! order is the queue's.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::spool::Spool;
use super::{count_dropped, Admission, Command, UsageRecord};
use crate::context::Journal;

/// One running request and the token counts its row was last written with.
struct InFlight {
    admission: Admission,
    written: Option<(u64, u64, u64)>,
}

#[derive(Default)]
struct Inner {
    in_flight: HashMap<usize, InFlight>,
    spool: Option<Spool>,
    /// Sequence number of the last completed row spooled.
    last_seq: u64,
}

pub(super) struct Shared {
    inner: Mutex<Inner>,
    pub(super) dropped: AtomicU64,
}

/// A refreshed in-flight row, and what to remember once it is committed.
pub(super) struct Refresh {
    pub(super) row: UsageRecord,
    key: usize,
    counts: (u64, u64, u64),
}

fn journal_key(journal: &Arc<Journal>) -> usize {
    Arc::as_ptr(journal) as usize
}

impl Shared {
    pub(super) fn new(spool: Option<Spool>) -> Self {
        let inner = Inner { spool, ..Inner::default() };
        Self { inner: Mutex::new(inner), dropped: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn admit(&self, admission: Admission) {
        let key = journal_key(&admission.journal);
        let mut inner = self.lock();
        if let Some(spool) = inner.spool.as_mut() {
            spool.append(&admission.row);
        }
        inner.in_flight.insert(key, InFlight { admission, written: None });
    }

    /// Spools and queues a completed row; a full queue counts it and keeps its spool file.
    pub(super) fn complete(
        &self,
        row: UsageRecord,
        journal: Option<&Arc<Journal>>,
        tx: &mpsc::Sender<Command>,
    ) -> bool {
        let mut inner = self.lock();
        if let Some(journal) = journal {
            inner.in_flight.remove(&journal_key(journal));
        }
        inner.last_seq += 1;
        let seq = inner.last_seq;
        if let Some(spool) = inner.spool.as_mut() {
            spool.append(&row);
        }
        if tx.try_send(Command::Row(Box::new(row), seq)).is_ok() {
            return true;
        }
        if let Some(spool) = inner.spool.as_mut() {
            spool.keep(seq);
        }
        drop(inner);
        count_dropped(&self.dropped, 1, "queue full");
        false
    }

    /// Closes the spool file and its lock (rows after this are not spooled).
    pub(super) fn release_spool(&self) {
        self.lock().spool = None;
    }

    pub(super) fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Rows of in-flight requests whose counts changed since they were last written.
    pub(super) fn refreshes(&self) -> Vec<Refresh> {
        let inner = self.lock();
        let mut refreshes = Vec::new();
        for (&key, entry) in &inner.in_flight {
            let counts = entry.admission.journal.live.snapshot();
            if entry.written != Some(counts) {
                refreshes.push(Refresh { row: refreshed_row(&entry.admission, counts), key, counts });
            }
        }
        refreshes
    }

    /// Remembers what was written, so unchanged rows are not written again.
    pub(super) fn refreshed(&self, written: &[Refresh]) {
        let mut inner = self.lock();
        for refresh in written {
            if let Some(entry) = inner.in_flight.get_mut(&refresh.key) {
                entry.written = Some(refresh.counts);
                entry.admission.row = refresh.row.clone();
            }
        }
    }

    /// Every completed row up to `seq` is committed: lets the spool shrink.
    pub(super) fn committed(&self, seq: u64) {
        let mut inner = self.lock();
        let Inner { in_flight, spool, last_seq } = &mut *inner;
        if let Some(spool) = spool.as_mut() {
            spool.committed(seq, *last_seq, in_flight.values().map(|entry| &entry.admission.row));
        }
    }

    /// Completed rows `seqs` could not be written: counted, and their spool files kept.
    pub(super) fn lost(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        if let Some(spool) = self.lock().spool.as_mut() {
            seqs.iter().for_each(|&seq| spool.keep(seq));
        }
        count_dropped(&self.dropped, seqs.len() as u64, "commit failed after retries");
    }
}

/// The admission row with the tokens known so far, their cost, and the prompt version.
fn refreshed_row(admission: &Admission, (prompt, cached, completion): (u64, u64, u64)) -> UsageRecord {
    let mut row = admission.row.clone();
    (row.prompt_tokens, row.cached_tokens, row.completion_tokens) = (prompt, cached, completion);
    row.cost = admission.pricing.cost(&row.model, prompt, cached, completion);
    row.latency_s = admission.received.elapsed().as_secs_f64();
    if let Some(used) = admission.journal.prompt.get() {
        (row.prompt_name, row.prompt_version) = (used.name.clone(), used.version);
        row.prompt_label = used.label.clone().unwrap_or_default();
    }
    row
}
