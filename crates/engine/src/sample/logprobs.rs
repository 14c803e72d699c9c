//! Log-softmax of raw logits: the sampled token's logprob and the top alternatives.

use super::kernels::{exp_sum, max_of};
use super::topk::top_k_into;
use crate::api::TokenLogprob;

/// Log-softmax helper (also used for prompt logprobs): the logprob of `token` and the top-`top_k`
/// `(id, logprob)` pairs, most likely first (ties: lower id first). A `token` outside the
/// vocabulary gets `-inf`.
pub fn logprobs_of(logits: &[f32], token: u32, top_k: usize) -> TokenLogprob {
    logprobs_with(logits, token, top_k, &mut Vec::new())
}

/// [`logprobs_of`] with a caller-provided selection buffer.
pub(super) fn logprobs_with(logits: &[f32], token: u32, top_k: usize, scratch: &mut Vec<(f32, u32)>) -> TokenLogprob {
    let lse = log_sum_exp(logits);
    let logprob = logits.get(token as usize).map_or(f32::NEG_INFINITY, |&x| log_prob(x, lse));
    top_k_into(logits, top_k, scratch);
    let top = scratch.iter().map(|&(x, id)| (id, log_prob(x, lse))).collect();
    TokenLogprob { token_id: token, logprob, top }
}

fn log_prob(x: f32, lse: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        f32::NEG_INFINITY
    } else {
        x - lse
    }
}

/// Stable `log(sum(exp(x)))`: shifts by the max, exponentiates in f32, accumulates in f64.
/// NaN entries are ignored; all `-inf` gives `-inf`.
pub(super) fn log_sum_exp(logits: &[f32]) -> f32 {
    let m = max_of(logits);
    if !m.is_finite() {
        return m;
    }
    m + exp_sum(logits, m).ln() as f32
}
