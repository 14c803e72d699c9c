//! One OpenTelemetry span per request, with the GenAI semantic-convention attribute names,
//! and child spans for the engine phases (queue, prefill, decode) and each gateway stage.
//!
//! This crate only uses the OpenTelemetry API: `sconce-server` installs the SDK and the OTLP
//! exporter and then calls [`set_enabled`]. While it is off, a request costs one atomic load
//! per stage and nothing is recorded.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::trace::{
    Span, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use crate::api::{Api, Backend, Call, CallResult, Endpoint, Service};
use crate::context::{BackendTimings, CallContext, Journal};
use crate::ledger::UsageRecord;

/// The instrumentation scope of every span.
const TRACER_NAME: &str = "sconce";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns span recording on (once an exporter is installed) or off (at shutdown).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An inbound W3C `traceparent` (`00-{trace id}-{parent span id}-{flags}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses version 00 (and later versions' first four fields); None when malformed.
    pub fn parse(header: &str) -> Option<Self> {
        let mut fields = header.trim().split('-');
        let (version, trace, parent, flags) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && fields.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex::decode(trace).ok()?.try_into().ok()?;
        let parent_id: [u8; 8] = hex::decode(parent).ok()?.try_into().ok()?;
        let flags = hex::decode(flags).ok().filter(|bytes| bytes.len() == 1)?[0];
        let valid = trace_id != [0; 16] && parent_id != [0; 8];
        valid.then_some(Self { trace_id, parent_id, sampled: flags & 1 == 1 })
    }

    fn context(&self) -> Context {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let remote = SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.parent_id),
            flags,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(remote)
    }
}

/// When one stage was entered and left; `exit` is None while it still runs.
#[derive(Debug, Clone, Copy)]
struct StageTime {
    stage: &'static str,
    enter: Instant,
    exit: Option<Instant>,
}

/// The stages one request went through, in the order they were entered.
/// Written only while spans are recorded.
#[derive(Debug, Default)]
pub struct StageLog(Mutex<Vec<StageTime>>);

impl StageLog {
    /// Records a stage that already finished (e.g. auth, before the stages run).
    pub fn record(&self, stage: &'static str, enter: Instant, exit: Instant) {
        if is_enabled() {
            self.entries().push(StageTime { stage, enter, exit: Some(exit) });
        }
    }

    fn open(&self, stage: &'static str, enter: Instant) -> usize {
        let mut entries = self.entries();
        entries.push(StageTime { stage, enter, exit: None });
        entries.len() - 1
    }

    fn close(&self, index: usize, exit: Instant) {
        if let Some(entry) = self.entries().get_mut(index) {
            entry.exit = Some(exit);
        }
    }

    fn snapshot(&self) -> Vec<StageTime> {
        self.entries().clone()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<StageTime>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps a stage (and everything inside it) so its enter and exit times reach the trace.
/// Exit is when the stage hands back its reply: for a stream, before the first token.
pub fn timed<A: Api>(stage: &'static str, inner: Service<A>) -> Service<A> {
    Arc::new(Timed { stage, inner })
}

struct Timed<A: Api> {
    stage: &'static str,
    inner: Service<A>,
}

impl<A: Api> Backend<A> for Timed<A> {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let journal = call.ctx.journal.clone();
        time_stage(self.stage, &journal, || self.inner.call(call))
    }
}

/// Records `stage` in the journal from now (before `run` starts the stages inside) until
/// its reply resolves; only while spans are on.
pub fn time_stage<A: Api>(
    stage: &'static str,
    journal: &Arc<Journal>,
    run: impl FnOnce() -> BoxFuture<'static, CallResult<A>>,
) -> BoxFuture<'static, CallResult<A>> {
    if !is_enabled() {
        return run();
    }
    let journal = journal.clone();
    let entry = journal.stages.open(stage, Instant::now());
    let reply = run();
    Box::pin(async move {
        let result = reply.await;
        journal.stages.close(entry, Instant::now());
        result
    })
}

/// What the request span needs beyond the usage record, taken when the request starts.
pub struct RequestSpan {
    endpoint: Endpoint,
    /// The model the client asked for (`gen_ai.request.model`).
    request_model: String,
    /// When the HTTP request arrived: the span's start.
    received: Instant,
    journal: Arc<Journal>,
    parent: Option<TraceParent>,
}

impl RequestSpan {
    /// None (and nothing allocated) while spans are off.
    pub fn start(endpoint: Endpoint, request_model: Option<&str>, ctx: &CallContext) -> Option<Self> {
        is_enabled().then(|| Self {
            endpoint,
            request_model: request_model.unwrap_or_default().to_string(),
            received: ctx.received,
            journal: ctx.journal.clone(),
            parent: ctx.trace_parent,
        })
    }

    /// Exports the span and its children. It ends when the request was metered
    /// (`received + latency`); a stage still running then (the meter itself) ends there too.
    pub fn end(self, record: &UsageRecord) {
        let clock = Clock::now();
        let end = self.received + Duration::try_from_secs_f64(record.latency_s).unwrap_or_default();
        let tracer = global::tracer(TRACER_NAME);
        // SERVER: Sconce is the model server answering the client, not a client of one.
        let span = tracer
            .span_builder(self.name())
            .with_kind(SpanKind::Server)
            .with_start_time(clock.at(self.received))
            .with_attributes(self.attributes(record))
            .start_with_context(&tracer, &self.parent.map_or_else(Context::new, |parent| parent.context()));
        let cx = Context::new().with_span(span);
        if let Some(timings) = self.journal.timings.get() {
            for (phase, start, stop) in engine_phases(timings) {
                child(&tracer, &cx, phase.into(), Vec::new(), clock.at(start), clock.at(stop));
            }
        }
        for stage in self.journal.stages.snapshot() {
            let stage_name = stage.stage.to_ascii_lowercase();
            let name = format!("gateway.{stage_name}");
            let attributes = vec![KeyValue::new("sconce.stage", stage_name)];
            child(&tracer, &cx, name.into(), attributes, clock.at(stage.enter), clock.at(stage.exit.unwrap_or(end)));
        }
        if record.status >= 500 {
            cx.span().set_status(Status::error(record.finish_reason.clone()));
        }
        cx.span().end_with_timestamp(clock.at(end));
    }

    /// `{gen_ai.operation.name} {gen_ai.request.model}`, as the conventions name spans.
    fn name(&self) -> String {
        match self.request_model.as_str() {
            "" => self.endpoint.operation().to_string(),
            model => format!("{} {model}", self.endpoint.operation()),
        }
    }

    fn attributes(&self, record: &UsageRecord) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", self.endpoint.operation()),
            KeyValue::new("gen_ai.request.model", self.request_model.clone()),
            KeyValue::new("gen_ai.response.model", record.model.clone()),
            KeyValue::new("gen_ai.usage.input_tokens", saturating_i64(record.prompt_tokens)),
            KeyValue::new("gen_ai.usage.output_tokens", saturating_i64(record.completion_tokens)),
            KeyValue::new("gen_ai.server.time_to_first_token", record.ttft_s),
            KeyValue::new("sconce.request_id", record.request_id.clone()),
            KeyValue::new("sconce.key_alias", record.key_alias.clone()),
            KeyValue::new("sconce.team", record.team.clone()),
            KeyValue::new("sconce.cost", record.cost),
            KeyValue::new("http.response.status_code", i64::from(record.status)),
        ];
        if !record.prompt_name.is_empty() {
            let prompt = format!("{}@{}", record.prompt_name, record.prompt_version);
            attributes.push(KeyValue::new("sconce.prompt", prompt));
        }
        if !record.finish_reason.is_empty() {
            let reasons = Array::String(vec![StringValue::from(record.finish_reason.clone())]);
            attributes.push(KeyValue::new("gen_ai.response.finish_reasons", Value::Array(reasons)));
        }
        if record.status != 200 && !record.finish_reason.is_empty() {
            attributes.push(KeyValue::new("error.type", record.finish_reason.clone()));
        }
        attributes
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Queue, prefill and decode as consecutive intervals from the engine's arrival time.
fn engine_phases(timings: &BackendTimings) -> Vec<(&'static str, Instant, Instant)> {
    let Some(arrival) = timings.arrival else {
        return Vec::new();
    };
    let scheduled = arrival + timings.queued;
    let first_token = scheduled + timings.prefill;
    let finished = first_token + timings.decode;
    vec![("queue", arrival, scheduled), ("prefill", scheduled, first_token), ("decode", first_token, finished)]
}

fn child(
    tracer: &BoxedTracer,
    parent: &Context,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    start: SystemTime,
    end: SystemTime,
) {
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    span.end_with_timestamp(end.max(start));
}

/// Converts monotonic instants to wall-clock times against one reading of both clocks,
/// so the spans of a request stay consistent with each other.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Self { instant: Instant::now(), system: SystemTime::now() }
    }

    pub fn at(&self, instant: Instant) -> SystemTime {
        match self.instant.checked_duration_since(instant) {
            Some(ago) => self.system.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH),
            None => self.system.checked_add(instant.saturating_duration_since(self.instant)).unwrap_or(self.system),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_malformed_ones_are_ignored() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("a valid traceparent");
        assert_eq!(hex::encode(parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(parent.parent_id), "00f067aa0ba902b7");
        assert!(parent.sampled);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_clock_keeps_distances_between_instants() {
        let clock = Clock::now();
        let earlier = clock.instant - Duration::from_millis(250);
        let later = clock.instant + Duration::from_millis(40);
        assert_eq!(clock.at(clock.instant), clock.system);
        assert_eq!(clock.system.duration_since(clock.at(earlier)).ok(), Some(Duration::from_millis(250)));
        assert_eq!(clock.at(later).duration_since(clock.system).ok(), Some(Duration::from_millis(40)));
    }

    #[test]
    fn engine_phases_follow_each_other_from_arrival() {
        let arrival = Instant::now();
        let ms = Duration::from_millis;
        let timings = BackendTimings {
            arrival: Some(arrival),
            queued: ms(5),
            prefill: ms(10),
            decode: ms(20),
            time_to_first_token: ms(15),
        };
        let phases = engine_phases(&timings);
        let names: Vec<_> = phases.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, ["queue", "prefill", "decode"]);
        assert_eq!(phases[0].1, arrival);
        assert_eq!(phases[2].2, arrival + ms(35));
        assert!(phases.windows(2).all(|pair| pair[0].2 == pair[1].1));
        assert!(engine_phases(&BackendTimings::default()).is_empty());
    }
}
