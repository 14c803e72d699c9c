//! Guardrails as a stage: checks prompts before the inner stages, and generated text
//! after them, token by token on streams. A block on a stream cancels generation.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use sconce_protocol::ApiError;
use tokio_util::sync::CancellationToken;

use super::metrics::GuardMetrics;
use super::{Action, Guardrails, OutputGuard, Policy, StreamStep};
use crate::api::{Api, Backend, Call, CallResult, Failure, Reply, ReplyStream, Service};
use crate::endpoint::{ApiReply, ApiRequest};

pub const GUARDRAILS_HEADER: &str = "x-sconce-guardrails";
const CONTENT_FILTER: &str = "content_filter";

/// The compiled policies and their metrics, shared by every endpoint's guard.
pub struct GuardStage {
    pub guardrails: Arc<Guardrails>,
    pub metrics: Option<GuardMetrics>,
}

/// The guard stage over one endpoint's inner stages.
pub struct Guarded<A: Api> {
    stage: Arc<GuardStage>,
    inner: Service<A>,
}

impl<A: Api> Guarded<A> {
    pub fn new(stage: Arc<GuardStage>, inner: Service<A>) -> Self {
        Self { stage, inner }
    }
}

impl<A: Api> Backend<A> for Guarded<A> {
    fn call(&self, call: Call<A>) -> BoxFuture<'static, CallResult<A>> {
        let principal = &call.ctx.principal;
        let key = (!principal.key_id.is_empty()).then_some(principal.key_id.as_str());
        let team = (!principal.team.is_empty()).then_some(principal.team.as_str());
        let Some(policy) = self.stage.guardrails.policy_for(key, team) else {
            return self.inner.call(call);
        };
        Box::pin(guarded_call(policy, self.stage.metrics.clone(), self.inner.clone(), call))
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

/// A 400 naming the checks that fired and the field that held the text.
pub fn policy_violation(checks: &[&'static str], param: &str) -> ApiError {
    ApiError::invalid_request(format!("the request was blocked by guardrails: {}", checks.join(", ")))
        .with_code("content_policy_violation")
        .with_param(param)
}

async fn guarded_call<A: Api>(
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    inner: Service<A>,
    mut call: Call<A>,
) -> CallResult<A> {
    let header = (GUARDRAILS_HEADER, ran_header(&policy));
    if let Err(error) = check_prompt(&policy, metrics.as_ref(), &mut call.request) {
        return Err(Failure { error, headers: vec![header] });
    }
    let cancel = call.ctx.cancel.clone();
    let mut outcome = inner.call(call).await?;
    outcome.reply = match outcome.reply {
        Reply::Full(mut response) => {
            check_full(&policy, metrics.as_ref(), response.as_mut());
            Reply::Full(response)
        }
        Reply::Stream(stream) if policy.output_checks().is_empty() => Reply::Stream(stream),
        Reply::Stream(stream) => Reply::Stream(guard_stream(policy, metrics, cancel, stream)),
    };
    outcome.headers.push(header);
    Ok(outcome)
}

/// Runs input checks on every prompt text; masks in place or refuses.
fn check_prompt<R: ApiRequest>(
    policy: &Policy,
    metrics: Option<&GuardMetrics>,
    request: &mut R,
) -> Result<(), ApiError> {
    if policy.input_checks().is_empty() {
        return Ok(());
    }
    let mut blocked = Vec::new();
    request.visit_prompt_texts(&mut |text| {
        let verdict = policy.check_input(text);
        if let Some(m) = metrics {
            m.record("input", &verdict.triggered);
        }
        for check in verdict.blocked {
            if !blocked.contains(&check) {
                blocked.push(check);
            }
        }
        if let Some(masked) = verdict.masked {
            *text = masked;
        }
    })?;
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(policy_violation(&blocked, R::PROMPT_PARAM))
    }
}

/// Output checks on each choice of a whole reply.
fn check_full(policy: &Policy, metrics: Option<&GuardMetrics>, response: &mut impl ApiReply) {
    let blocked = check_full_arguments(policy, metrics, response);
    for mut choice in response.texts_mut() {
        let verdict = policy.check_output(choice.text.as_str());
        if let Some(m) = metrics {
            m.record("output", &verdict.triggered);
        }
        if verdict.is_blocked() || blocked.contains(&choice.index) {
            choice.text.clear();
            *choice.finish_reason = Some(CONTENT_FILTER.into());
        } else if let Some(masked) = verdict.masked {
            choice.text.set(masked);
        }
    }
}

/// Tool-call arguments get the output checks too: masked in place, or the choice is blocked
/// (its calls dropped). Returns the blocked choices.
fn check_full_arguments(
    policy: &Policy,
    metrics: Option<&GuardMetrics>,
    response: &mut impl ApiReply,
) -> HashSet<usize> {
    let mut blocked = HashSet::new();
    for arguments in response.arguments_mut() {
        let verdict = policy.check_output(arguments.text);
        if let Some(m) = metrics {
            m.record("output", &verdict.triggered);
        }
        if verdict.is_blocked() {
            blocked.insert(arguments.choice);
        } else if let Some(masked) = verdict.masked {
            *arguments.text = masked;
        }
    }
    for &choice in &blocked {
        response.clear_calls(choice);
    }
    blocked
}

/// Per-choice output guards over a chunk stream. A block ends the choice with
/// `content_filter` and cancels generation; then only the usage chunk still passes.
struct StreamGuard {
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    cancel: CancellationToken,
    guards: Vec<OutputGuard>,
    /// One guard per tool call's arguments, by (choice, call).
    call_guards: BTreeMap<(usize, usize), OutputGuard>,
    done: bool,
}

impl StreamGuard {
    fn guard(&mut self, index: usize) -> &mut OutputGuard {
        while self.guards.len() <= index {
            self.guards.push(OutputGuard::new(self.policy.clone()));
        }
        &mut self.guards[index]
    }

    /// Checks this chunk's argument fragments (releasing held-back text when a choice ends);
    /// returns the choices a check blocked.
    fn apply_arguments<C: ApiReply>(&mut self, chunk: &mut C) -> HashSet<usize> {
        let mut blocked = HashSet::new();
        for arguments in chunk.arguments_mut() {
            let policy = self.policy.clone();
            let guard =
                self.call_guards.entry((arguments.choice, arguments.call)).or_insert_with(|| OutputGuard::new(policy));
            match guard.push(arguments.text) {
                StreamStep::Emit(text) => *arguments.text = text,
                StreamStep::Blocked(_) => {
                    blocked.insert(arguments.choice);
                }
            }
        }
        let finishing: Vec<usize> =
            chunk.texts_mut().into_iter().filter(|choice| choice.finish_reason.is_some()).map(|c| c.index).collect();
        for choice in finishing {
            for (&(_, call), guard) in self.call_guards.range_mut((choice, 0)..=(choice, usize::MAX)) {
                match guard.finish() {
                    StreamStep::Emit(text) if !text.is_empty() => chunk.push_arguments(choice, call, text),
                    StreamStep::Emit(_) => {}
                    StreamStep::Blocked(_) => {
                        blocked.insert(choice);
                    }
                }
            }
        }
        for &choice in &blocked {
            chunk.clear_calls(choice);
        }
        blocked
    }

    /// The chunk as it may be sent, or None when it carries nothing any more.
    fn apply<C: ApiReply>(&mut self, mut chunk: C) -> Option<C> {
        let mut blocked = false;
        let blocked_calls = self.apply_arguments(&mut chunk);
        for mut choice in chunk.texts_mut() {
            let guard = self.guard(choice.index);
            let mut step = StreamStep::Emit(String::new());
            for &logprob in &choice.logprobs {
                if let Some(stop) = guard.push_logprob(logprob) {
                    step = stop;
                }
            }
            if matches!(step, StreamStep::Emit(_)) {
                step = guard.push(choice.text.as_str());
            }
            if choice.finish_reason.is_some() {
                step = merge(step, guard.finish());
            }
            if blocked_calls.contains(&choice.index) {
                step = StreamStep::Blocked(Vec::new());
            }
            match step {
                StreamStep::Emit(text) => choice.text.set(text),
                StreamStep::Blocked(_) => {
                    choice.text.clear();
                    *choice.finish_reason = Some(CONTENT_FILTER.into());
                    blocked = true;
                }
            }
        }
        if blocked {
            self.done = true;
            self.cancel.cancel();
            self.record();
            chunk.retain_choices(&mut |finish| finish == Some(CONTENT_FILTER));
            return Some(chunk);
        }
        (!chunk.carries_nothing()).then_some(chunk)
    }

    fn record(&self) {
        if let Some(m) = &self.metrics {
            for guard in self.guards.iter().chain(self.call_guards.values()) {
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

fn guard_stream<C: ApiReply>(
    policy: Arc<Policy>,
    metrics: Option<GuardMetrics>,
    cancel: CancellationToken,
    stream: ReplyStream<C>,
) -> ReplyStream<C> {
    let mut state =
        StreamGuard { policy, metrics, cancel, guards: Vec::new(), call_guards: BTreeMap::new(), done: false };
    stream
        .filter_map(move |item| {
            let out = match item {
                Ok(chunk) if state.done => chunk.is_usage_only().then_some(Ok(chunk)),
                Err(_) if state.done => None,
                Ok(chunk) => state.apply(chunk).map(Ok),
                Err(error) => Some(Err(error)),
            };
            futures_util::future::ready(out)
        })
        .boxed()
}
