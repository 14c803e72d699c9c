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
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use crate::ledger::UsageRecord;
use crate::{BackendTimings, CallContext, ChatBackend, ChatCall, ChatResult, Marks, SharedBackend};

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

/// `gen_ai.operation.name`: which API the request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    TextCompletion,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::TextCompletion => "text_completion",
        }
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

/// A stage's name from its type: `sconce_gateway::meter::MeterLayer` → `Meter`.
pub fn stage_name(type_name: &'static str) -> &'static str {
    let path = type_name.split('<').next().unwrap_or(type_name);
    let last = path.rsplit("::").next().unwrap_or(path);
    last.strip_suffix("Layer").filter(|name| !name.is_empty()).unwrap_or(last)
}

/// Wraps a stage (and everything inside it) so its enter and exit times reach the trace.
/// Exit is when the stage hands back its reply: for a stream, before the first token.
pub fn timed(stage: &'static str, inner: SharedBackend) -> SharedBackend {
    Arc::new(Timed { stage, inner })
}

struct Timed {
    stage: &'static str,
    inner: SharedBackend,
}

impl ChatBackend for Timed {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        if !is_enabled() {
            return self.inner.chat(call);
        }
        let marks = call.ctx.marks.clone();
        let entry = marks.stages.open(self.stage, Instant::now());
        let reply = self.inner.chat(call);
        Box::pin(async move {
            let result = reply.await;
            marks.stages.close(entry, Instant::now());
            result
        })
    }
}

/// What the request span needs beyond the usage record, taken when the request starts.
pub struct RequestSpan {
    operation: Operation,
    /// The model the client asked for (`gen_ai.request.model`).
    request_model: String,
    /// When the HTTP request arrived: the span's start.
    received: Instant,
    marks: Arc<Marks>,
}

impl RequestSpan {
    /// None (and nothing allocated) while spans are off.
    pub fn start(operation: Operation, request_model: Option<&str>, ctx: &CallContext) -> Option<Self> {
        is_enabled().then(|| Self {
            operation,
            request_model: request_model.unwrap_or_default().to_string(),
            received: ctx.received,
            marks: ctx.marks.clone(),
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
            .start(&tracer);
        let cx = Context::new().with_span(span);
        if let Some(timings) = self.marks.timings.get() {
            for (phase, start, stop) in engine_phases(timings) {
                child(&tracer, &cx, phase.into(), Vec::new(), clock.at(start), clock.at(stop));
            }
        }
        for stage in self.marks.stages.snapshot() {
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
            "" => self.operation.as_str().to_string(),
            model => format!("{} {model}", self.operation.as_str()),
        }
    }

    fn attributes(&self, record: &UsageRecord) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", self.operation.as_str()),
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
    fn stage_names_come_from_layer_types() {
        assert_eq!(stage_name("sconce_gateway::meter::MeterLayer"), "Meter");
        assert_eq!(stage_name("sconce_gateway::guard::layer::GuardLayer"), "Guard");
        assert_eq!(stage_name("my::Wrapper<sconce_gateway::meter::MeterLayer>"), "Wrapper");
        assert_eq!(stage_name("Layer"), "Layer");
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
