//! `EngineHandle`: a cheap, cloneable front to the engine loop running on its own thread.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::Notify;

use crate::api::{Delta, EngineError, EngineStats, GenerateRequest, ModelInfo};
use crate::config::OnPanic;
use crate::constrain::Grammars;
use crate::engine::Engine;
use crate::output::DeltaSink;
use crate::validate::validate_request;

enum Command {
    Add { request: Box<GenerateRequest>, sink: DeltaSink, arrival: Instant },
    Abort(String),
    Shutdown,
}

/// State shared by the handle and the loop thread.
struct Shared {
    stats: Mutex<EngineStats>,
    /// Requests submitted but not yet seen running or finished (queue bound for overload).
    pending: AtomicUsize,
    stopped: AtomicBool,
    /// Why the engine thread failed (a panic with `on_panic = "exit"`); set once.
    failure: Mutex<Option<String>>,
    failed: Notify,
}

/// Whether the engine loop serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Running,
    /// The loop stopped on shutdown.
    Stopped,
    /// The loop panicked and gave up; the reason.
    Failed(String),
}

impl Shared {
    fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
        self.stopped.store(true, Ordering::Release);
        self.failed.notify_waiters();
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

struct Inner {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    info: ModelInfo,
    max_waiting: usize,
    grammars: Arc<Grammars>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Clone)]
pub struct EngineHandle {
    inner: Arc<Inner>,
}

impl EngineHandle {
    /// Moves the engine onto its own thread and returns the handle.
    pub fn spawn(engine: Engine, max_waiting: usize) -> Result<Self, EngineError> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            stats: Mutex::new(engine.stats()),
            pending: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            failure: Mutex::new(None),
            failed: Notify::new(),
        });
        let inner = Inner {
            commands: tx,
            shared: shared.clone(),
            info: engine.model_info().clone(),
            max_waiting,
            grammars: engine.grammars(),
            thread: Mutex::new(None),
        };
        // The loop runs on a worker of its own compute pool, so parallel kernels split work with
        // the loop's thread instead of waking a separate pool and sleeping on every op.
        let pool = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("sconce-worker-{i}"))
            .build()
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let thread = std::thread::Builder::new()
            .name("sconce-engine".into())
            .spawn(move || pool.install(|| run_loop(engine, rx, shared)))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if let Ok(mut slot) = inner.thread.lock() {
            *slot = Some(thread);
        }
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Compiles constraints for this model (on the caller's thread, not the engine's).
    pub fn grammars(&self) -> &Arc<Grammars> {
        &self.inner.grammars
    }

    /// Validates and enqueues; the stream yields the request's deltas.
    pub fn submit(&self, request: GenerateRequest) -> Result<RequestStream, EngineError> {
        let inner = &self.inner;
        if inner.shared.stopped.load(Ordering::Acquire) {
            return Err(EngineError::Stopped);
        }
        validate_request(&request, &inner.info)?;
        let waiting = inner.shared.stats.lock().map(|s| s.num_waiting).unwrap_or(0);
        let pending = inner.shared.pending.load(Ordering::Acquire);
        if waiting + pending >= inner.max_waiting {
            return Err(EngineError::Overloaded(inner.max_waiting));
        }
        let (sink, rx) = unbounded_channel();
        let id = request.id.clone();
        let choices = request.params.n;
        inner.shared.pending.fetch_add(1, Ordering::AcqRel);
        let command = Command::Add { request: Box::new(request), sink, arrival: Instant::now() };
        inner.commands.send(command).map_err(|_| EngineError::Stopped)?;
        Ok(RequestStream { id, rx, unfinished: choices, handle: Some(self.clone()) })
    }

    pub fn abort(&self, id: &str) {
        let _ = self.inner.commands.send(Command::Abort(id.to_string()));
    }

    pub fn stats(&self) -> EngineStats {
        self.inner.shared.stats.lock().map(|s| *s).unwrap_or_default()
    }

    pub fn state(&self) -> EngineState {
        let shared = &self.inner.shared;
        match shared.failure() {
            Some(reason) => EngineState::Failed(reason),
            None if shared.stopped.load(Ordering::Acquire) => EngineState::Stopped,
            None => EngineState::Running,
        }
    }

    /// Resolves with the reason once the engine thread has failed (never, if it does not).
    pub async fn failed(&self) -> String {
        let shared = &self.inner.shared;
        loop {
            let notified = shared.failed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = shared.failure() {
                return reason;
            }
            notified.await;
        }
    }

    pub fn model_info(&self) -> &ModelInfo {
        &self.inner.info
    }

    /// Aborts everything, stops the loop thread and waits for it.
    pub fn shutdown(&self) {
        let _ = self.inner.commands.send(Command::Shutdown);
        let thread = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// The deltas of one request. Dropping it before the end aborts the request.
pub struct RequestStream {
    id: String,
    rx: UnboundedReceiver<Delta>,
    unfinished: usize,
    handle: Option<EngineHandle>,
}

impl RequestStream {
    pub fn id(&self) -> &str {
        &self.id
    }

    fn track(&mut self, delta: Option<Delta>) -> Option<Delta> {
        match &delta {
            Some(d) if d.finish_reason.is_some() => self.unfinished = self.unfinished.saturating_sub(1),
            None => self.unfinished = 0,
            _ => {}
        }
        delta
    }

    pub async fn next(&mut self) -> Option<Delta> {
        if self.unfinished == 0 {
            return None;
        }
        let delta = self.rx.recv().await;
        self.track(delta)
    }

    pub fn blocking_next(&mut self) -> Option<Delta> {
        if self.unfinished == 0 {
            return None;
        }
        let delta = self.rx.blocking_recv();
        self.track(delta)
    }

    /// True once every choice has finished.
    pub fn is_finished(&self) -> bool {
        self.unfinished == 0
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if self.unfinished > 0 {
            if let Some(handle) = self.handle.take() {
                handle.abort(&self.id);
            }
        }
    }
}

fn run_loop(mut engine: Engine, rx: mpsc::Receiver<Command>, shared: Arc<Shared>) {
    loop {
        let first = if engine.has_work() { rx.try_recv().ok() } else { rx.recv().ok().or(Some(Command::Shutdown)) };
        let mut shutdown = false;
        for command in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            shutdown |= apply(&mut engine, command, &shared);
        }
        if shutdown {
            break;
        }
        if engine.has_work() && !step_or_recover(&mut engine, &shared) {
            return;
        }
        if let Ok(mut stats) = shared.stats.lock() {
            *stats = engine.stats();
        }
    }
    engine.abort_all();
    shared.stopped.store(true, Ordering::Release);
    if let Ok(mut stats) = shared.stats.lock() {
        *stats = engine.stats();
    }
}

/// Runs one step. A failed step ends its requests with an error; a panic fails them too, then
/// restarts the engine or marks it failed (false: the loop must end).
fn step_or_recover(engine: &mut Engine, shared: &Shared) -> bool {
    let payload = match catch_unwind(AssertUnwindSafe(|| engine.step())) {
        Ok(Ok(_)) => return true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "engine step failed; failing its requests");
            engine.fail_all();
            return true;
        }
        Err(payload) => payload,
    };
    let reason = format!("the engine thread panicked: {}", panic_message(payload.as_ref()));
    tracing::error!(%reason, on_panic = ?engine.on_panic(), "engine panic");
    if engine.on_panic() == OnPanic::Restart && catch_unwind(AssertUnwindSafe(|| engine.restart())).is_ok() {
        tracing::warn!("engine restarted with an empty KV cache");
        return true;
    }
    // Failed before its requests hear of it, so the probes already say so when they do.
    shared.fail(reason);
    // Dropping the engine closes what failing could not reach: those streams end early (500).
    let _ = catch_unwind(AssertUnwindSafe(|| engine.fail_all()));
    false
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        return (*text).to_string();
    }
    payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "unknown panic".into())
}

/// Applies one command; true means shut down.
fn apply(engine: &mut Engine, command: Command, shared: &Shared) -> bool {
    match command {
        Command::Add { request, sink, arrival } => {
            shared.pending.fetch_sub(1, Ordering::AcqRel);
            if let Err(e) = engine.add_request(*request, sink.clone(), arrival) {
                tracing::warn!(error = %e, "request refused by the engine loop");
                drop(sink);
            }
            false
        }
        Command::Abort(id) => {
            engine.abort(&id);
            false
        }
        Command::Shutdown => true,
    }
}
