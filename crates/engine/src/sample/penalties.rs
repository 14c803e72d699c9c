//! Repetition (HF/vLLM) and presence/frequency (OpenAI) penalties.

use std::collections::{HashMap, HashSet};

use crate::api::SamplingParams;

#[derive(Debug, Clone)]
pub(super) struct Penalties {
    repetition: f32,
    presence: f32,
    frequency: f32,
    /// Distinct prompt + generated tokens; maintained only when the repetition penalty is on.
    seen: HashSet<u32>,
    /// Generated-token counts.
    counts: HashMap<u32, u32>,
}

impl Penalties {
    pub(super) fn new(params: &SamplingParams, prompt: &[u32]) -> Self {
        let mut p = Self {
            repetition: params.repetition_penalty,
            presence: params.presence_penalty,
            frequency: params.frequency_penalty,
            seen: HashSet::new(),
            counts: HashMap::new(),
        };
        if p.repetition_on() {
            p.seen.extend(prompt.iter().copied());
        }
        p
    }

    fn repetition_on(&self) -> bool {
        self.repetition != 1.0
    }

    fn additive_on(&self) -> bool {
        self.presence != 0.0 || self.frequency != 0.0
    }

    pub(super) fn record(&mut self, token: u32) {
        *self.counts.entry(token).or_insert(0) += 1;
        if self.repetition_on() {
            self.seen.insert(token);
        }
    }

    /// Repetition first, then presence/frequency (vLLM order). Each token is touched
    /// independently, so the hash iteration order does not affect the result.
    pub(super) fn apply(&self, logits: &mut [f32]) {
        if self.repetition_on() {
            self.apply_repetition(logits);
        }
        if self.additive_on() {
            self.apply_additive(logits);
        }
    }

    /// Positive logits are divided by the penalty, the others multiplied by it.
    fn apply_repetition(&self, logits: &mut [f32]) {
        let p = self.repetition;
        for &id in &self.seen {
            if let Some(x) = logits.get_mut(id as usize) {
                *x = if *x > 0.0 { *x / p } else { *x * p };
            }
        }
    }

    /// `logit -= presence * 1[count > 0] + frequency * count` over generated tokens.
    fn apply_additive(&self, logits: &mut [f32]) {
        for (&id, &count) in &self.counts {
            if let Some(x) = logits.get_mut(id as usize) {
                *x -= self.presence + self.frequency * count as f32;
            }
        }
    }
}
