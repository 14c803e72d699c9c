//! Guardrails as a stage: checks prompts before the inner backend, and generated text
//! after it, token by token on streams.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sconce_protocol::chat::{ChatCompletionChunk, MessageContent};
use sconce_protocol::ApiError;

use super::metrics::GuardMetrics;
use super::{Action, Guardrails, OutputGuard, Policy, StreamStep};
use crate::{ChatBackend, ChatCall, ChatReply, ChatResult, ChunkStream, Layer, Marks, SharedBackend};

pub struct GuardLayer {
    pub guardrails: Arc<Guardrails>,
    pub metrics: Option<GuardMetrics>,
}

impl Layer for GuardLayer {
    fn layer(&self, inner: SharedBackend) -> SharedBackend {
        Arc::new(Guarded { guardrails: self.guardrails.clone(), metrics: self.metrics.clone(), inner })
    }
}

struct Guarded {
    guardrails: Arc<Guardrails>,
    metrics: Option<GuardMetrics>,
    inner: SharedBackend,
}

impl ChatBackend for Guarded {
    fn chat(&self, call: ChatCall) -> BoxFuture<'static, ChatResult> {
        let principal = &call.ctx.principal;
        let key = (!principal.key_id.is_empty()).then_some(principal.key_id.as_str());
        let team = (!principal.team.is_empty()).then_some(principal.team.as_str());
        let policy = self.guardrails.policy_for(key, team);
        let (inner, metrics) = (self.inner.clone(), self.metrics.clone());
        Box::pin(async move {
            match policy {
                None => inner.chat(call).await,
                Some(policy) => guarded_chat(policy, metrics, inner, call).await,
            }
        })
    }
}

fn ran_header(policy: &Policy) -> String {
    let names = |stage: &str, checks: &[(&'static str, Action)]| {
        checks.iter().map(|(c, a)| format!("{stage}:{c}:{}", a.as_str())).collect::<Vec<_>>()
    };
    let mut all = names("input", policy.input_checks());
    all.extend(names("output", policy.output_checks()));
    all.join(",")
}

/// A 400 naming the checks that fired.
pub fn policy_violation(checks: &[&'static str]) -> ApiError {
    ApiError::invalid_request(format!("the request was blocked by guardrails: {}", checks.join(", ")))
        .with_code("content_policy_violation")
        .with_param("messages")
}

async fn guarded_chat(
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    inner: SharedBackend,
    mut call: ChatCall,
) -> ChatResult {
    let header = ("x-sconce-guardrails", ran_header(&policy));
    if let Err(error) = check_messages(&policy, metrics.as_ref(), &mut call) {
        return Err(crate::ChatFailure { error, headers: vec![header] });
    }
    let marks = call.ctx.marks.clone();
    let mut outcome = inner.chat(call).await?;
    outcome.reply = match outcome.reply {
        ChatReply::Full(mut response) => {
            for choice in &mut response.choices {
                let verdict = policy.check_output(&choice.message.content);
                if let Some(m) = &metrics {
                    m.record("output", &verdict.triggered);
                }
                if verdict.is_blocked() {
                    choice.message.content.clear();
                    choice.finish_reason = Some("content_filter".into());
                } else if let Some(masked) = verdict.masked {
                    choice.message.content = masked;
                }
            }
            ChatReply::Full(response)
        }
        ChatReply::Stream(stream) if policy.output_checks().is_empty() => ChatReply::Stream(stream),
        ChatReply::Stream(stream) => ChatReply::Stream(guard_stream(policy, metrics, marks, stream)),
    };
    outcome.headers.push(header);
    Ok(outcome)
}

/// Runs input checks on every message; masks in place or refuses.
fn check_messages(policy: &Policy, metrics: Option<&GuardMetrics>, call: &mut ChatCall) -> Result<(), ApiError> {
    if policy.input_checks().is_empty() {
        return Ok(());
    }
    let mut blocked = Vec::new();
    for message in &mut call.request.messages {
        let verdict = policy.check_input(&message.text()?);
        if let Some(m) = metrics {
            m.record("input", &verdict.triggered);
        }
        for check in verdict.blocked {
            if !blocked.contains(&check) {
                blocked.push(check);
            }
        }
        if let Some(masked) = verdict.masked {
            message.content = Some(MessageContent::Text(masked));
        }
    }
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(policy_violation(&blocked))
    }
}

/// Per-choice output guards over a chunk stream; a block ends it with `content_filter`,
/// then only the usage chunk still passes.
struct StreamGuard {
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    marks: Arc<Marks>,
    guards: Vec<OutputGuard>,
    done: bool,
}

impl StreamGuard {
    fn guard(&mut self, index: usize) -> &mut OutputGuard {
        while self.guards.len() <= index {
            self.guards.push(OutputGuard::new(self.policy.clone()));
        }
        &mut self.guards[index]
    }

    /// The chunk as it may be sent, or None when it carries nothing any more.
    fn apply(&mut self, mut chunk: ChatCompletionChunk) -> Option<ChatCompletionChunk> {
        for choice in &mut chunk.choices {
            let guard = self.guard(choice.index);
            let mut step = StreamStep::Emit(String::new());
            for lp in choice.logprobs.iter().flat_map(|l| l.content.iter()) {
                if let Some(blocked) = guard.push_logprob(lp.logprob) {
                    step = blocked;
                }
            }
            if matches!(step, StreamStep::Emit(_)) {
                step = guard.push(choice.delta.content.as_deref().unwrap_or(""));
            }
            if choice.finish_reason.is_some() {
                step = merge(step, guard.finish());
            }
            match step {
                StreamStep::Emit(text) => {
                    choice.delta.content = (!text.is_empty() || choice.delta.role.is_some()).then_some(text);
                }
                StreamStep::Blocked(_) => {
                    choice.delta.content = None;
                    choice.finish_reason = Some("content_filter".into());
                    self.done = true;
                }
            }
        }
        if self.done {
            self.marks.request_stop();
            self.record();
            chunk.choices.retain(|c| c.finish_reason.as_deref() == Some("content_filter"));
            return Some(chunk);
        }
        let useful = chunk.choices.is_empty()
            || chunk
                .choices
                .iter()
                .any(|c| c.delta.content.is_some() || c.delta.role.is_some() || c.finish_reason.is_some());
        useful.then_some(chunk)
    }

    fn record(&self) {
        if let Some(m) = &self.metrics {
            for guard in &self.guards {
                m.record("output", guard.triggered());
            }
        }
    }
}

fn merge(first: StreamStep, second: StreamStep) -> StreamStep {
    match (first, second) {
        (StreamStep::Emit(mut a), StreamStep::Emit(b)) => {
            a.push_str(&b);
            StreamStep::Emit(a)
        }
        (StreamStep::Blocked(a), _) | (_, StreamStep::Blocked(a)) => StreamStep::Blocked(a),
    }
}

fn guard_stream(
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    marks: Arc<Marks>,
    stream: ChunkStream,
) -> ChunkStream {
    let mut state = StreamGuard { policy, metrics, marks, guards: Vec::new(), done: false };
    stream
        .filter_map(move |item| {
            let out = match item {
                Ok(chunk) if state.done => is_usage(&chunk).then_some(Ok(chunk)),
                Err(_) if state.done => None,
                Ok(chunk) => state.apply(chunk).map(Ok),
                Err(error) => Some(Err(error)),
            };
            futures_util::future::ready(out)
        })
        .boxed()
}

/// The closing usage chunk: no choices, usage set.
fn is_usage(chunk: &ChatCompletionChunk) -> bool {
    chunk.choices.is_empty() && matches!(chunk.usage, Some(Some(_)))
}
