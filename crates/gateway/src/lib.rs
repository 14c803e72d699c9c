//! Sconce's LLMOps layer.
//!
//! A [`ChatBackend`] answers OpenAI chat requests: the local engine (in `sconce-server`)
//! or, later, a remote OpenAI-compatible upstream. Ops concerns (keys, limits, metering,
//! the ledger, caching, routing, guardrails) are [`Layer`]s that wrap a backend, the way
//! tower layers compose. This crate never depends on the engine or candle.

pub mod cache;
pub mod guard;
pub mod prompts;
pub mod route;

pub mod auth;
pub mod budget;
pub mod config;
pub mod endpoint;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod meter;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod redis_store;
pub mod store;
pub mod telemetry;
pub mod usage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sconce_protocol::chat::{ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse};
use sconce_protocol::completion::CompletionResponse;
use sconce_protocol::ApiError;

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
    pub key: Option<Arc<keys::ApiKey>>,
}

/// Per-request facts the stages share, set by the HTTP layer.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub request_id: String,
    pub principal: Principal,
    /// When the HTTP request arrived (for latency and gateway overhead).
    pub received: Instant,
    /// Times the innermost backend writes for the outer stages to read.
    pub marks: Arc<Marks>,
    /// Per-request routing and caching hints from headers (part 2).
    pub hints: route::RequestHints,
}

impl CallContext {
    pub fn new(request_id: impl Into<String>, principal: Principal) -> Self {
        Self::received_at(request_id, principal, Instant::now())
    }

    pub fn received_at(request_id: impl Into<String>, principal: Principal, received: Instant) -> Self {
        Self { request_id: request_id.into(), principal, received, marks: Arc::default(), hints: Default::default() }
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

/// Set once per request: when the backend started, and its timings once done.
#[derive(Debug, Default)]
pub struct Marks {
    pub backend_start: OnceLock<Instant>,
    pub timings: OnceLock<BackendTimings>,
    /// Stage enter/exit times, for the request's trace (only while spans are exported).
    pub stages: telemetry::StageLog,
    /// The registry prompt version the request used, set by the prompt stage.
    pub prompt: OnceLock<prompts::PromptTag>,
    /// Set by a stage (a guardrail block) that wants the stream ended early, usage included.
    stop: AtomicBool,
}

impl Marks {
    /// Asks the backend to stop generating and close its stream with the usage so far.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Time spent in the stages before the backend began, from `received`.
    pub fn overhead(&self, received: Instant) -> Duration {
        self.backend_start.get().map_or(Duration::ZERO, |start| start.saturating_duration_since(received))
    }
}

/// One chat request travelling through the stages.
#[derive(Debug, Clone)]
pub struct ChatCall {
    pub request: ChatCompletionRequest,
    pub ctx: CallContext,
}

/// Chunks of a streamed reply. A backend always ends a successful stream with a usage
/// chunk (`choices: []`, `usage` set); the HTTP layer hides it unless the client asked.
pub type ReplyStream<C> = BoxStream<'static, Result<C, ApiError>>;
pub type ChunkStream = ReplyStream<ChatCompletionChunk>;

/// What a backend answers: one body, or a stream of chunks.
pub enum Reply<F, C> {
    Full(Box<F>),
    Stream(ReplyStream<C>),
}

pub type ChatReply = Reply<ChatCompletionResponse, ChatCompletionChunk>;
/// `/v1/completions` uses one type for full responses and chunks.
pub type CompletionReply = Reply<CompletionResponse, CompletionResponse>;

/// Response headers a stage wants added (e.g. cost, rate-limit state).
pub type ExtraHeaders = Vec<(&'static str, String)>;

/// A reply with the headers the stages attached.
pub struct Outcome<R> {
    pub reply: R,
    pub headers: ExtraHeaders,
}

impl<R> Outcome<R> {
    pub fn new(reply: R) -> Self {
        Self { reply, headers: Vec::new() }
    }
}

pub type ChatOutcome = Outcome<ChatReply>;

/// An error with the headers the stages attached (e.g. `Retry-After`).
#[derive(Debug)]
pub struct ChatFailure {
    pub error: ApiError,
    pub headers: ExtraHeaders,
}

impl From<ApiError> for ChatFailure {
    fn from(error: ApiError) -> Self {
        Self { error, headers: Vec::new() }
    }
}

pub type ChatResult = Result<ChatOutcome, ChatFailure>;
pub type CallResult<R> = Result<Outcome<R>, ChatFailure>;

/// Answers chat requests. Implemented by the local engine and by every stage.
pub trait ChatBackend: Send + Sync + 'static {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult>;
}

/// A shared, type-erased backend.
pub type SharedBackend = Arc<dyn ChatBackend>;

/// Wraps a backend in one stage, like `tower::Layer`.
pub trait Layer: Send + Sync {
    fn layer(&self, inner: SharedBackend) -> SharedBackend;

    /// The stage's name in traces; by default its type's name without `Layer`.
    fn name(&self) -> &'static str {
        telemetry::stage_name(std::any::type_name::<Self>())
    }
}

/// Builds a backend from layers: the first layer added is the outermost.
#[derive(Default)]
pub struct Stack {
    layers: Vec<Box<dyn Layer>>,
}

impl Stack {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(mut self, layer: impl Layer + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn build(self, inner: SharedBackend) -> SharedBackend {
        self.layers.into_iter().rev().fold(inner, |backend, layer| telemetry::timed(layer.name(), layer.layer(backend)))
    }
}
