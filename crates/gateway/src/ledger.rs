//! The usage ledger: one row per request, appended by a batching writer off the
//! request path. A full channel never blocks a request: the row is counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::config::LedgerConfig;
use crate::store::Store;

/// One metered request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    /// Unix seconds when the request arrived.
    pub ts: i64,
    /// `chat` or `text_completion` (OpenTelemetry's `gen_ai.operation.name`).
    pub operation: String,
    pub model: String,
    pub key_id: String,
    pub key_alias: String,
    pub team: String,
    /// The OpenAI `user` field.
    pub user: String,
    pub status: u16,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost: f64,
    pub ttft_s: f64,
    /// Time per output token after the first.
    pub tpot_s: f64,
    pub latency_s: f64,
    pub overhead_s: f64,
    /// The registry prompt the request used (empty and 0: none), and the label it came through.
    #[serde(default)]
    pub prompt_name: String,
    #[serde(default)]
    pub prompt_version: u32,
    #[serde(default)]
    pub prompt_label: String,
}

enum Command {
    Row(Box<UsageRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to share.
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    dropped: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Store, config: &LedgerConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let interval = Duration::from_millis(config.batch_interval_ms.max(1));
        let writer = tokio::spawn(write_loop(store, rx, interval, config.batch_size.max(1)));
        Arc::new(Self { tx, dropped: AtomicU64::new(0), writer: Mutex::new(Some(writer)) })
    }

    /// Queues a row without waiting. Returns false (counted, logged) when the queue is full.
    pub fn record(&self, row: UsageRecord) -> bool {
        match self.tx.try_send(Command::Row(Box::new(row))) {
            Ok(()) => true,
            Err(error) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    tracing::warn!(dropped, %error, "usage ledger queue full: row dropped");
                }
                false
            }
        }
    }

    /// Rows dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Rows waiting for the writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until every row queued so far is committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes and stops the writer (at shutdown).
    pub async fn close(&self) {
        self.flush().await;
        if let Some(writer) = self.writer.lock().await.take() {
            writer.abort();
            let _ = writer.await;
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<Command>, interval: Duration, batch_size: usize) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(batch_size);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Row(row)) => {
                    batch.push(*row);
                    if batch.len() >= batch_size {
                        commit(&store, &mut batch).await;
                    }
                }
                Some(Command::Flush(done)) => {
                    commit(&store, &mut batch).await;
                    let _ = done.send(());
                }
                None => break,
            },
            _ = ticker.tick() => commit(&store, &mut batch).await,
        }
    }
    commit(&store, &mut batch).await;
}

/// Commits the batch in one transaction, retrying a few times before giving up loudly.
async fn commit(store: &Store, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    for attempt in 1..=3 {
        match store.insert_usage(batch).await {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(error) => {
                tracing::warn!(attempt, rows = batch.len(), %error, "usage ledger write failed");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }
    tracing::error!(rows = batch.len(), "usage ledger rows lost after retries");
    batch.clear();
}
