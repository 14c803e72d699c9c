//! Temperature, top-k, top-p, min-p and the draw itself.
//!
//! Weights are `exp((l - max) / T)`, so the most likely token has weight 1 and the min-p threshold
//! is simply `min_p`. With top-k (k < vocab) only the k best candidates are exponentiated;
//! otherwise the full-vocabulary path of [`super::nucleus`] runs in place.

use super::kernels::{exp_neg, max_of};
use super::nucleus;
use super::topk::top_k_into;
use crate::api::SamplingParams;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Filters {
    pub(super) inv_temp: f32,
    /// 0 = off.
    pub(super) top_k: usize,
    pub(super) top_p: f32,
    pub(super) min_p: f32,
}

impl Filters {
    pub(super) fn from_params(p: &SamplingParams) -> Self {
        Self { inv_temp: 1.0 / p.temperature, top_k: p.top_k, top_p: p.top_p, min_p: p.min_p }
    }

    pub(super) fn top_p_on(&self) -> bool {
        self.top_p < 1.0
    }

    /// min-p threshold relative to the top weight (1.0); capped so the top token always survives.
    pub(super) fn min_weight(&self) -> f32 {
        self.min_p.clamp(0.0, 1.0)
    }
}

/// Index of the largest logit; ties → lowest id; NaNs ignored; 0 if there is no candidate.
pub(super) fn argmax(logits: &[f32]) -> u32 {
    let m = max_of(logits);
    logits.iter().position(|&x| x == m).map_or(0, |i| i as u32)
}

/// Samples one token with the uniform `u` in `[0, 1)`. `logits` may be overwritten.
pub(super) fn sample(logits: &mut [f32], f: &Filters, u: f64, scratch: &mut Vec<(f32, u32)>) -> u32 {
    if f.top_k > 0 && f.top_k < logits.len() {
        sample_top_k(logits, f, u, scratch)
    } else {
        nucleus::sample_full(logits, f, u, scratch)
    }
}

/// top-k, then top-p and min-p on the k rank-sorted candidates.
fn sample_top_k(logits: &[f32], f: &Filters, u: f64, cands: &mut Vec<(f32, u32)>) -> u32 {
    top_k_into(logits, f.top_k, cands);
    let Some(&(top, top_id)) = cands.first() else {
        return argmax(logits);
    };
    if !top.is_finite() {
        return top_id;
    }
    for c in cands.iter_mut() {
        c.0 = exp_neg((c.0 - top) * f.inv_temp);
    }
    let n = nucleus_len(cands, f.top_p);
    let min_w = f.min_weight();
    let n = cands[..n].partition_point(|c| c.0 >= min_w).max(1);
    draw(&cands[..n], u)
}

/// Length of the shortest prefix of rank-sorted weights whose mass reaches `top_p` of the total
/// (at least 1).
fn nucleus_len(sorted: &[(f32, u32)], top_p: f32) -> usize {
    if top_p >= 1.0 {
        return sorted.len();
    }
    let total: f64 = sorted.iter().map(|c| f64::from(c.0)).sum();
    prefix_reaching(sorted, 0.0, f64::from(top_p) * total)
}

/// Length of the shortest prefix whose mass, added to `cum`, reaches `target` (at least 1; all
/// of `sorted` if it never does).
pub(super) fn prefix_reaching(sorted: &[(f32, u32)], mut cum: f64, target: f64) -> usize {
    for (i, c) in sorted.iter().enumerate() {
        cum += f64::from(c.0);
        if cum >= target {
            return i + 1;
        }
    }
    sorted.len()
}

/// Draws from `(weight, id)` candidates in proportion to their weights. Zero weights are never
/// drawn unless every weight is zero (then the first candidate).
pub(super) fn draw(cands: &[(f32, u32)], u: f64) -> u32 {
    let total: f64 = cands.iter().map(|c| f64::from(c.0)).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = None;
    for &(w, id) in cands {
        if w > 0.0 {
            cum += f64::from(w);
            last = Some(id);
            if cum > target {
                return id;
            }
        }
    }
    last.or(cands.first().map(|c| c.1)).unwrap_or(0)
}
