//! The writer task: batches completed rows, refreshes in-flight ones on each tick, commits
//! with retries and tells the spool what is safely written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::in_flight::{Refresh, Shared};
use super::{Command, UsageRecord};
use crate::store::Store;

const ATTEMPTS: u64 = 3;

pub(super) struct Writer {
    store: Store,
    shared: Arc<Shared>,
    batch_size: usize,
    /// Completed rows and their spool sequence numbers.
    batch: Vec<UsageRecord>,
    seqs: Vec<u64>,
    /// The newest sequence number committed.
    committed: u64,
}

impl Writer {
    pub(super) fn new(store: Store, shared: Arc<Shared>, batch_size: usize) -> Self {
        let batch = Vec::with_capacity(batch_size);
        Self { store, shared, batch_size, batch, seqs: Vec::new(), committed: 0 }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Command>, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Row(row, seq)) => {
                        self.batch.push(*row);
                        self.seqs.push(seq);
                        if self.batch.len() >= self.batch_size {
                            self.commit(Vec::new()).await;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        self.tick().await;
                        let _ = done.send(());
                    }
                    None => break,
                },
                _ = ticker.tick() => self.tick().await,
            }
        }
        self.tick().await;
    }

    /// Commits the batch with the in-flight rows refreshed.
    async fn tick(&mut self) {
        let refreshes = self.shared.refreshes();
        self.commit(refreshes).await;
    }

    /// Commits refreshed and completed rows in one transaction, retrying a few times; rows
    /// still unwritten are counted and kept in the spool.
    async fn commit(&mut self, refreshes: Vec<Refresh>) {
        if self.batch.is_empty() && refreshes.is_empty() {
            return;
        }
        let mut rows: Vec<UsageRecord> = refreshes.iter().map(|refresh| refresh.row.clone()).collect();
        rows.append(&mut self.batch);
        for attempt in 1..=ATTEMPTS {
            match self.store.insert_usage(&rows).await {
                Ok(()) => {
                    self.shared.refreshed(&refreshes);
                    self.committed = self.seqs.last().copied().unwrap_or(self.committed);
                    self.seqs.clear();
                    self.shared.committed(self.committed);
                    return;
                }
                Err(error) => {
                    tracing::warn!(attempt, rows = rows.len(), %error, "usage ledger write failed");
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                }
            }
        }
        self.shared.lost(&std::mem::take(&mut self.seqs));
    }
}
