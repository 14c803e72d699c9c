//! One span per request with the OpenTelemetry GenAI attribute names.

use crate::ledger::UsageRecord;
use crate::BackendTimings;

/// Emits the request's span (and its queue, prefill and decode children).
pub fn record_span(record: &UsageRecord, timings: Option<BackendTimings>) {
    let span = tracing::debug_span!(
        "gen_ai.chat",
        gen_ai.operation.name = "chat",
        gen_ai.request.model = %record.model,
        gen_ai.response.model = %record.model,
        gen_ai.usage.input_tokens = record.prompt_tokens,
        gen_ai.usage.output_tokens = record.completion_tokens,
        gen_ai.response.finish_reasons = %record.finish_reason,
        gen_ai.server.time_to_first_token = record.ttft_s,
        sconce.request_id = %record.request_id,
    );
    let _entered = span.enter();
    if let Some(timings) = timings {
        tracing::debug!(
            queue_s = timings.queued.as_secs_f64(),
            prefill_s = timings.prefill.as_secs_f64(),
            decode_s = timings.decode.as_secs_f64(),
            "engine phases"
        );
    }
}
