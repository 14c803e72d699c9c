//! What every stage knows about one request besides its body: who sent it, its id,
//! hints from headers, facts earlier stages settled, and the journal later ones fill in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::prompts::PromptTag;
use crate::route::RequestHints;
use crate::telemetry::{StageLog, TraceParent};

/// The caller behind a request, once authenticated (or anonymous with auth off).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Principal {
    /// The key's id (stable, not secret); empty when auth is off.
    pub key_id: String,
    /// The key's alias: the bounded label used in metrics and usage reports.
    pub alias: String,
    pub team: String,
    pub is_admin: bool,
    /// The key's record, for its limits; none for the admin key or with auth off.
    pub key: Option<Arc<crate::keys::ApiKey>>,
}

/// Per-request facts, set by the HTTP layer and, going inward, by the stages.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The request's one id: `x-request-id`, the ledger row, the span, the engine request
    /// and the suffix of the response's `id`.
    pub request_id: String,
    pub principal: Principal,
    /// When the HTTP request arrived (for latency and gateway overhead).
    pub received: Instant,
    /// Routing and caching hints from headers.
    pub hints: RequestHints,
    /// The inbound W3C `traceparent`, which the request's span continues.
    pub trace_parent: Option<TraceParent>,
    /// The registry prompt version, set by the prompt stage for the stages inside it.
    pub prompt: Option<PromptTag>,
    /// Cancelled by a stage that wants generation stopped (an output guardrail's block):
    /// the innermost stream then closes with the usage of what ran.
    pub cancel: CancellationToken,
    /// What inner parts report for the outer ones to meter and trace.
    pub journal: Arc<Journal>,
}

impl CallContext {
    pub fn new(request_id: impl Into<String>, principal: Principal) -> Self {
        Self::received_at(request_id, principal, Instant::now())
    }

    pub fn received_at(request_id: impl Into<String>, principal: Principal, received: Instant) -> Self {
        Self {
            request_id: request_id.into(),
            principal,
            received,
            hints: RequestHints::default(),
            trace_parent: None,
            prompt: None,
            cancel: CancellationToken::new(),
            journal: Arc::default(),
        }
    }
}

/// Engine-side timings of one request, as the backend reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendTimings {
    /// When the engine queued the request (None for backends that do not say).
    pub arrival: Option<Instant>,
    pub queued: Duration,
    pub prefill: Duration,
    pub decode: Duration,
    pub time_to_first_token: Duration,
}

/// Write-once reports from the inner parts of a request, read when it is booked:
/// when the backend started, its timings, the prompt version used and the stage times.
#[derive(Debug, Default)]
pub struct Journal {
    pub backend_start: OnceLock<Instant>,
    pub timings: OnceLock<BackendTimings>,
    /// The registry prompt version the request used (for the ledger).
    pub prompt: OnceLock<PromptTag>,
    /// Stage enter/exit times, for the request's trace (only while spans are exported).
    pub stages: StageLog,
    /// Tokens known so far, updated by the backend as they are generated: what a
    /// cancelled or failed request is billed for, and what the ledger flushes in flight.
    pub live: LiveUsage,
    /// The budget hold the policy stage took, for the meter to settle.
    pub budget_hold: crate::budget::HoldSlot,
}

/// Running token counts of one request (all choices together).
#[derive(Debug, Default)]
pub struct LiveUsage {
    prompt: AtomicU64,
    cached: AtomicU64,
    completion: AtomicU64,
}

impl LiveUsage {
    /// Sets the prompt's token count (and how many of them hit the prefix cache).
    pub fn set_prompt(&self, prompt: u64, cached: u64) {
        self.prompt.store(prompt, Ordering::Relaxed);
        self.cached.store(cached, Ordering::Relaxed);
    }

    /// Counts `tokens` more generated tokens.
    pub fn add_completion(&self, tokens: u64) {
        self.completion.fetch_add(tokens, Ordering::Relaxed);
    }

    /// (prompt, cached, completion) tokens so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.prompt.load(Ordering::Relaxed),
            self.cached.load(Ordering::Relaxed),
            self.completion.load(Ordering::Relaxed),
        )
    }
}

impl Journal {
    /// Time spent in the stages before the backend began, from `received`.
    pub fn overhead(&self, received: Instant) -> Duration {
        self.backend_start.get().map_or(Duration::ZERO, |start| start.saturating_duration_since(received))
    }
}
