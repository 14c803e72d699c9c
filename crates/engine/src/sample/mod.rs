//! Per-sequence token sampler (vLLM/OpenAI semantics).
//!
//! Processing order for one decode step:
//! logit_bias → min_tokens ban (EOS and stop ids) → repetition penalty → presence/frequency
//! penalties → greedy argmax, or temperature → top-k → top-p → min-p → draw.
//!
//! Each [`SequenceSampler`] owns a ChaCha8 RNG and draws exactly one uniform per sampled token
//! (greedy steps included), so a seeded sequence is reproducible regardless of batch composition.
//! After warm-up the hot path allocates nothing (except the returned logprob alternatives) and it
//! never sorts the whole vocabulary.

mod dist;
mod kernels;
mod logprobs;
mod nucleus;
mod penalties;
mod topk;

#[cfg(test)]
mod tests;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::api::{SamplingParams, TokenLogprob};
use crate::constrain::SequenceConstraint;
use dist::Filters;
use penalties::Penalties;

pub use logprobs::logprobs_of;

/// Below this temperature sampling is greedy (vLLM's `_SAMPLING_EPS`).
const GREEDY_EPS: f32 = 1e-5;

/// A logit bias at or below this value bans the token outright (OpenAI: "-100 should result in a
/// ban"); other biases are added to the logit.
const BAN_BIAS: f32 = -100.0;

/// The outcome of one sampling step.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Filled when `params.logprobs` is `Some(k)`: computed from the raw model logits (before
    /// bias, penalties and temperature), with the top `k` alternatives.
    pub logprob: Option<TokenLogprob>,
}

/// Sampling state of one sequence (one choice of a request). A clone continues the same random
/// stream, so give each choice its own sampler (and seed) rather than cloning one.
#[derive(Debug, Clone)]
pub struct SequenceSampler {
    filters: Filters,
    greedy: bool,
    logprobs: Option<usize>,
    logit_bias: Vec<(u32, f32)>,
    min_tokens: usize,
    stop_token_ids: Vec<u32>,
    penalties: Penalties,
    rng: ChaCha8Rng,
    /// Reused buffer: top-k / top-p / min-p candidates, then the logprob alternatives.
    pairs: Vec<(f32, u32)>,
    /// Reused copy of the raw logits, kept only when logprobs are requested.
    raw: Vec<f32>,
}

impl SequenceSampler {
    /// `seed`: the request seed mixed with the choice index (the caller passes the final u64);
    /// `None` seeds from OS entropy.
    pub fn new(params: &SamplingParams, seed: Option<u64>, prompt: &[u32]) -> Self {
        let seed = seed.unwrap_or_else(rand::random);
        Self {
            filters: Filters::from_params(params),
            greedy: params.temperature.is_nan() || params.temperature < GREEDY_EPS,
            logprobs: params.logprobs,
            logit_bias: params.logit_bias.clone(),
            min_tokens: params.min_tokens,
            stop_token_ids: params.stop_token_ids.clone(),
            penalties: Penalties::new(params, prompt),
            rng: ChaCha8Rng::seed_from_u64(seed),
            pairs: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Records a generated token (updates the counts used by the penalties).
    pub fn record(&mut self, token: u32) {
        self.penalties.record(token);
    }

    /// Samples the next token from raw logits (`logits.len()` = vocab size).
    ///
    /// `num_generated` is how many tokens this sequence has generated so far; while it is below
    /// `min_tokens`, `eos_ids` and `params.stop_token_ids` are banned. `logits` is used as
    /// scratch and holds unspecified values afterwards.
    pub fn sample(&mut self, logits: &mut [f32], num_generated: usize, eos_ids: &[u32]) -> Sampled {
        self.sample_constrained(logits, num_generated, eos_ids, None)
    }

    /// [`SequenceSampler::sample`] within a grammar: its mask bans tokens first, and the
    /// other options (bias, penalties, temperature, top-k/p) work on what it allows. The
    /// min_tokens ban gives way when the grammar allows nothing but the end.
    pub fn sample_constrained(
        &mut self,
        logits: &mut [f32],
        num_generated: usize,
        eos_ids: &[u32],
        constraint: Option<&mut SequenceConstraint>,
    ) -> Sampled {
        let u: f64 = self.rng.random();
        // Only bans (a -100 bias, the min_tokens ban) can leave a mask with nothing allowed.
        let may_ban_all = constraint.is_some() && (num_generated < self.min_tokens || self.bans_tokens());
        if self.logprobs.is_some() || may_ban_all {
            self.raw.clear();
            self.raw.extend_from_slice(logits);
        }
        match constraint {
            None => self.process(logits, num_generated, eos_ids),
            Some(constraint) => {
                constraint.apply(logits);
                self.process(logits, num_generated, eos_ids);
                if may_ban_all && logits.iter().all(|x| *x == f32::NEG_INFINITY) {
                    constraint.apply(self.restore(logits));
                    self.process(logits, usize::MAX, eos_ids);
                }
            }
        }
        let token =
            if self.greedy { dist::argmax(logits) } else { dist::sample(logits, &self.filters, u, &mut self.pairs) };
        let logprob = self.logprobs.map(|k| logprobs::logprobs_with(&self.raw, token, k, &mut self.pairs));
        Sampled { token, logprob }
    }

    fn bans_tokens(&self) -> bool {
        self.logit_bias.iter().any(|&(_, bias)| bias <= BAN_BIAS)
    }

    /// The raw logits again (kept when logprobs are on or bans could empty a mask).
    fn restore<'a>(&self, logits: &'a mut [f32]) -> &'a mut [f32] {
        logits.copy_from_slice(&self.raw);
        logits
    }

    /// Applies bias, the min_tokens ban and the penalties to `logits`, in that order.
    fn process(&self, logits: &mut [f32], num_generated: usize, eos_ids: &[u32]) {
        apply_bias(logits, &self.logit_bias);
        if num_generated < self.min_tokens {
            ban(logits, eos_ids);
            ban(logits, &self.stop_token_ids);
        }
        self.penalties.apply(logits);
    }
}

fn apply_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = if b <= BAN_BIAS { f32::NEG_INFINITY } else { *x + b };
        }
    }
}

fn ban(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(x) = logits.get_mut(id as usize) {
            *x = f32::NEG_INFINITY;
        }
    }
}
