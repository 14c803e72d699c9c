//! Per-choice output state: sampling, detokenization, stop checks and delta emission.

use std::sync::Arc;
use std::time::Instant;

use llguidance::Matcher;
use sconce_text::{IncrementalDetokenizer, StopMatcher, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{Delta, FinishReason, RequestTimings, SamplingParams, TokenLogprob, Usage};
use crate::constrain::SequenceConstraint;
use crate::sample::SequenceSampler;

/// Where a request's deltas go.
pub type DeltaSink = UnboundedSender<Delta>;

/// Timestamps of one choice's life.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
}

impl Timeline {
    pub fn finish(&self, now: Instant) -> RequestTimings {
        let scheduled = self.first_scheduled.unwrap_or(now);
        let first_token = self.first_token.unwrap_or(now);
        RequestTimings {
            arrival: self.arrival,
            queued: scheduled.saturating_duration_since(self.arrival),
            prefill: first_token.saturating_duration_since(scheduled),
            decode: now.saturating_duration_since(first_token),
            time_to_first_token: first_token.saturating_duration_since(self.arrival),
            e2e: now.saturating_duration_since(self.arrival),
        }
    }
}

/// One choice (one sequence) of a request.
pub struct Choice {
    pub request_id: String,
    pub index: usize,
    pub params: Arc<SamplingParams>,
    pub sampler: SequenceSampler,
    /// The grammar this choice's output follows, if any.
    pub constraint: Option<SequenceConstraint>,
    detokenizer: IncrementalDetokenizer,
    stops: StopMatcher,
    pub sink: DeltaSink,
    pub timeline: Timeline,
    /// Prompt logprobs gathered across prefill chunks (choice 0 only).
    pub prompt_logprobs: Option<Vec<Option<TokenLogprob>>>,
}

/// What all choices of one request share.
pub struct ChoiceInit<'a> {
    pub request_id: &'a str,
    pub params: Arc<SamplingParams>,
    pub prompt: &'a [u32],
    pub tokenizer: &'a Arc<Tokenizer>,
    pub sink: &'a DeltaSink,
    pub arrival: Instant,
}

/// What the engine knows about a sequence when it emits a token.
pub struct TokenContext<'a> {
    pub token: u32,
    pub logprob: Option<TokenLogprob>,
    pub num_generated: usize,
    pub total_len: usize,
    pub max_model_len: usize,
    pub eos_ids: &'a [u32],
    /// The constraint's grammar is complete (nothing but the end may follow).
    pub grammar_complete: bool,
}

impl Choice {
    /// `matcher`: this choice's own copy of the request's constraint, if it has one.
    pub fn new(init: &ChoiceInit, index: usize, seed: Option<u64>, matcher: Option<Matcher>) -> Self {
        let params = init.params.clone();
        let want_prompt_logprobs = index == 0 && params.prompt_logprobs.is_some();
        Self {
            request_id: init.request_id.to_string(),
            index,
            sampler: SequenceSampler::new(&params, seed, init.prompt),
            constraint: matcher.map(SequenceConstraint::new),
            detokenizer: IncrementalDetokenizer::new(init.tokenizer.clone(), init.prompt, params.skip_special_tokens),
            stops: StopMatcher::new(params.stop.clone(), params.include_stop_str_in_output),
            params,
            sink: init.sink.clone(),
            timeline: Timeline { arrival: init.arrival, first_scheduled: None, first_token: None },
            prompt_logprobs: want_prompt_logprobs.then(|| vec![None]),
        }
    }

    /// Turns a sampled token into a delta; decides whether the choice is finished.
    pub fn on_token(&mut self, ctx: TokenContext) -> Delta {
        self.sampler.record(ctx.token);
        let now = Instant::now();
        self.timeline.first_token.get_or_insert(now);
        let piece = self.detokenizer.push(ctx.token).unwrap_or_default();
        let matched = self.stops.push(&piece);
        let mut text = matched.text;
        let is_stop_token = (!self.params.ignore_eos && ctx.eos_ids.contains(&ctx.token))
            || self.params.stop_token_ids.contains(&ctx.token);
        let finish = if matched.stopped || is_stop_token || ctx.grammar_complete {
            Some(FinishReason::Stop)
        } else if ctx.num_generated >= self.params.max_tokens || ctx.total_len >= ctx.max_model_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        if finish.is_some() && !matched.stopped {
            text.push_str(&self.flush_text());
        }
        Delta {
            index: self.index,
            token_ids: vec![ctx.token],
            text,
            logprobs: ctx.logprob.into_iter().collect(),
            prompt_logprobs: self.prompt_logprobs.take(),
            finish_reason: finish,
            usage: None,
            timings: None,
        }
    }

    /// Releases text held back by the detokenizer and the stop matcher.
    fn flush_text(&mut self) -> String {
        let tail = self.detokenizer.flush().unwrap_or_default();
        let matched = self.stops.push(&tail);
        let mut text = matched.text;
        if !matched.stopped {
            text.push_str(&self.stops.flush());
        }
        text
    }

    /// Adds usage and timings to a finishing delta.
    pub fn finalize(&self, delta: &mut Delta, usage: Usage) {
        delta.usage = Some(usage);
        delta.timings = Some(self.timeline.finish(Instant::now()));
    }

    /// The delta sent when a choice is aborted or fails, with the usage of what ran.
    pub fn end_delta(&self, reason: FinishReason, usage: Usage) -> Delta {
        let mut delta = Delta {
            index: self.index,
            token_ids: Vec::new(),
            text: String::new(),
            logprobs: Vec::new(),
            prompt_logprobs: None,
            finish_reason: Some(reason),
            usage: None,
            timings: None,
        };
        self.finalize(&mut delta, usage);
        delta
    }
}
