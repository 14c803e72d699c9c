//! The usage ledger: one row per request, written by a batching writer off the request path.
//! A request is spooled (see [`spool`]) when it is admitted and again when it completes;
//! while it runs, each flush tick writes its row with the tokens known so far, so a
//! `kill -9` loses no admitted request. A full queue never blocks a request: the row stays
//! in the spool and is counted as dropped.

mod in_flight;
mod spool;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::config::{GatewayConfig, LedgerConfig};
use crate::context::Journal;
use crate::store::Store;
use in_flight::Shared;

/// One metered request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    /// Unix seconds when the request arrived.
    pub ts: i64,
    /// `chat`, `text_completion` or `embeddings` (OpenTelemetry's `gen_ai.operation.name`).
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
    /// Running, completed, or cut off by the death of its process.
    #[serde(default)]
    pub state: RowState,
    /// Tool calls the reply made, over all choices.
    #[serde(default)]
    pub tool_calls: u64,
}

/// Where a ledger row stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    /// Admitted and running: tokens are those known at the last flush.
    Admitted,
    #[default]
    Done,
    /// Its process died while it ran (found in the spool at the next start).
    Interrupted,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::Done => "done",
            Self::Interrupted => "interrupted",
        }
    }

    /// Unknown text reads as `done` (rows from before the column).
    pub fn parse(text: &str) -> Self {
        match text {
            "admitted" => Self::Admitted,
            "interrupted" => Self::Interrupted,
            _ => Self::Done,
        }
    }
}

/// A request as it is admitted: its first row, and what refreshes that row while it runs.
pub struct Admission {
    /// State `admitted`, no tokens yet.
    pub row: UsageRecord,
    /// The request's journal, whose live counts the flush ticks write.
    pub journal: Arc<Journal>,
    pub received: Instant,
    /// Prices the tokens known so far.
    pub pricing: Arc<GatewayConfig>,
}

enum Command {
    /// A completed row and its spool sequence number.
    Row(Box<UsageRecord>, u64),
    Flush(oneshot::Sender<()>),
}

/// The sending side; cheap to share.
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Starts the writer task on the current runtime, without a spool.
    pub fn start(store: Store, config: &LedgerConfig) -> Arc<Self> {
        Self::start_with(store, config, None)
    }

    /// Replays the spool left by earlier processes (when `config.spool_path` is set), then
    /// starts the writer over a fresh spool.
    pub async fn open(store: Store, config: &LedgerConfig) -> anyhow::Result<Arc<Self>> {
        let spool = match &config.spool_path {
            Some(path) => Some(spool::recover(&store, path).await?),
            None => None,
        };
        Ok(Self::start_with(store, config, spool))
    }

    fn start_with(store: Store, config: &LedgerConfig, spool: Option<spool::Spool>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let shared = Arc::new(Shared::new(spool));
        let interval = Duration::from_millis(config.batch_interval_ms.max(1));
        let writer = writer::Writer::new(store, shared.clone(), config.batch_size.max(1));
        let writer = tokio::spawn(writer.run(rx, interval));
        Arc::new(Self { tx, shared, writer: Mutex::new(Some(writer)) })
    }

    /// Spools a request as it is admitted; its row is written at the next flush tick and
    /// refreshed at each one until [`Ledger::complete`].
    pub fn admit(&self, admission: Admission) {
        self.shared.admit(admission);
    }

    /// Queues the completed row of an admitted request without waiting.
    /// Returns false (counted, logged, kept in the spool) when the queue is full.
    pub fn complete(&self, row: UsageRecord, journal: &Arc<Journal>) -> bool {
        self.shared.complete(row, Some(journal), &self.tx)
    }

    /// Queues a row that was never admitted (see [`Ledger::complete`]).
    pub fn record(&self, row: UsageRecord) -> bool {
        self.shared.complete(row, None, &self.tx)
    }

    /// Rows not written: a full queue, or a commit that failed after retries. They stay in
    /// the spool and are written at the next start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Rows waiting for the writer.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Requests admitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Waits until every row queued so far is committed, with in-flight rows refreshed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes, stops the writer and lets go of the spool (at shutdown). Requests still
    /// running stay in the spool as admitted: the next start marks them interrupted.
    pub async fn close(&self) {
        self.flush().await;
        if let Some(writer) = self.writer.lock().await.take() {
            writer.abort();
            let _ = writer.await;
        }
        self.shared.release_spool();
    }
}

/// Counts one more dropped row, logging at powers of two.
fn count_dropped(dropped: &AtomicU64, rows: u64, why: &str) {
    let before = dropped.fetch_add(rows, Ordering::Relaxed);
    if (before + rows).is_power_of_two() || before == 0 {
        tracing::warn!(dropped = before + rows, why, "usage ledger rows not written (kept in the spool)");
    }
}
