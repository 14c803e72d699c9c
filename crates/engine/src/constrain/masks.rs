//! Per-sequence matcher state, and the step's masks computed in parallel.

use std::time::{Duration, Instant};

use llguidance::Matcher;
use rayon::prelude::*;
use toktrie::SimpleVob;

use super::stats::MaskStats;

/// One constrained sequence: its matcher and the mask for its next token.
pub struct SequenceConstraint {
    matcher: Matcher,
    mask: Option<SimpleVob>,
}

/// What the matcher said after a sampled token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// More tokens may follow.
    Open,
    /// The grammar is complete: the sequence ends here.
    Complete,
    /// The token was not allowed, or the matcher failed (the sequence ends).
    Failed,
}

impl SequenceConstraint {
    pub fn new(matcher: Matcher) -> Self {
        Self { matcher, mask: None }
    }

    fn compute(&mut self) {
        self.mask = match self.matcher.compute_mask() {
            Ok(mask) => Some(mask),
            Err(error) => {
                tracing::warn!(%error, "constraint mask failed");
                None
            }
        };
    }

    /// Bans what the grammar does not allow next (computing the mask now if the step did not).
    pub fn apply(&mut self, logits: &mut [f32]) {
        if self.mask.is_none() {
            self.compute();
        }
        match &self.mask {
            Some(mask) => apply_mask(logits, mask),
            // A failed matcher allows nothing but what `advance` will refuse.
            None => logits.iter_mut().for_each(|x| *x = f32::NEG_INFINITY),
        }
    }

    /// Moves the matcher past `token`; the mask is spent.
    pub fn advance(&mut self, token: u32) -> Advance {
        self.mask = None;
        if self.matcher.consume_token(token).is_err() || self.matcher.is_error() {
            return Advance::Failed;
        }
        if self.matcher.is_stopped() {
            Advance::Complete
        } else {
            Advance::Open
        }
    }

    /// True when the grammar accepts what was generated so far (EOS would be allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

/// A sequence whose next token this step samples.
pub type MaskJob<'a> = &'a mut SequenceConstraint;

/// Computes every job's mask, in parallel across sequences, timing each and the whole.
pub fn compute_masks(jobs: Vec<MaskJob<'_>>, stats: &MaskStats) -> Duration {
    let started = Instant::now();
    jobs.into_par_iter().for_each(|job| {
        let one = Instant::now();
        job.compute();
        stats.per_token.observe(one.elapsed());
    });
    let elapsed = started.elapsed();
    stats.per_step.observe(elapsed);
    elapsed
}

/// Sets every logit the mask does not allow to -inf (ids past the mask are banned too).
pub fn apply_mask(logits: &mut [f32], mask: &SimpleVob) {
    let words = mask.as_slice();
    for (word_index, chunk) in logits.chunks_mut(32).enumerate() {
        let word = words.get(word_index).copied().unwrap_or(0);
        if word == u32::MAX {
            continue;
        }
        if word == 0 {
            chunk.fill(f32::NEG_INFINITY);
            continue;
        }
        for (bit, logit) in chunk.iter_mut().enumerate() {
            if word & (1 << bit) == 0 {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}
