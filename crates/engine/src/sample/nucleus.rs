//! The full-vocabulary path (no top-k), in place and O(V).
//!
//! Logits become weights `w = exp((l - max) / T)` in `(0, 1]`. For top-p, every token below
//! `(1 - top_p) * total / V` is provably outside the nucleus (all of them together weigh less
//! than `1 - top_p`), so one vectorized pass collects the candidates above that floor. The
//! nucleus boundary among them is found by radix selection on the f32 bits (per 8-bit digit, the
//! bucket masses locate the bucket where the rank-ordered cumulative mass crosses `top_p`), and
//! only the final bucket is sorted. Without top-p and min-p the draw scans the weights in place.

use super::dist::{argmax, draw, prefix_reaching, Filters};
use super::kernels::{any, exp_in_place, max_of, sum_f64};
use super::topk::rank_cmp;

/// Radix levels of the nucleus search: 8-bit digits of the (positive, hence monotone) f32 bits.
const DIGIT_SHIFTS: [u32; 3] = [23, 15, 7];

pub(super) fn sample_full(logits: &mut [f32], f: &Filters, u: f64, list: &mut Vec<(f32, u32)>) -> u32 {
    let m = max_of(logits);
    if !m.is_finite() {
        return argmax(logits);
    }
    let total = exp_in_place(logits, m, f.inv_temp);
    let weights: &[f32] = logits;
    let min_w = f.min_weight();
    if f.top_p_on() {
        top_p_candidates(weights, total, f.top_p, list);
        if min_w > 0.0 {
            list.retain(|c| c.0 >= min_w);
        }
    } else if min_w > 0.0 {
        collect_at_least(weights, min_w, list);
    } else {
        return draw_in_place(weights, total, u);
    }
    if list.is_empty() {
        return argmax(weights);
    }
    draw(list, u)
}

/// Fills `list` with the top-p nucleus of `weights` (whose sum is `total`).
pub(super) fn top_p_candidates(weights: &[f32], total: f64, top_p: f32, list: &mut Vec<(f32, u32)>) {
    let tail_bound = (1.0 - f64::from(top_p).max(0.0)) * total / weights.len() as f64;
    // Slightly lower, so that f32 rounding cannot exclude a nucleus token.
    collect_at_least(weights, (tail_bound * 0.999) as f32, list);
    keep_prefix_reaching(list, f64::from(top_p) * total);
}

/// Keeps the shortest rank-ordered prefix of `list` whose mass reaches `target` (all of it if
/// none does), without sorting: radix-select on the weight bits, then a sort of one bucket.
fn keep_prefix_reaching(list: &mut Vec<(f32, u32)>, target: f64) {
    let (mut start, mut cum) = (0, 0.0);
    for shift in DIGIT_SHIFTS {
        let Some(split) = split_at_crossing(&mut list[start..], shift, target - cum) else {
            return;
        };
        start += split.above;
        cum += split.above_mass;
        list.truncate(start + split.bucket);
    }
    let bucket = &mut list[start..];
    bucket.sort_unstable_by(rank_cmp);
    let n = prefix_reaching(bucket, cum, target);
    list.truncate(start + n);
}

/// Result of one radix level: `above` entries (of total weight `above_mass`) rank before the
/// crossing bucket, which holds the next `bucket` entries.
struct Split {
    above: usize,
    above_mass: f64,
    bucket: usize,
}

fn digit(w: f32, shift: u32) -> usize {
    ((w.to_bits() >> shift) & 0xff) as usize
}

/// Total weight per digit value; four interleaved tables keep repeated digits from serializing
/// on one accumulator.
fn digit_masses(seg: &[(f32, u32)], shift: u32) -> [f64; 256] {
    let mut t = [[0.0f64; 256]; 4];
    let chunks = seg.chunks_exact(4);
    for &(w, _) in chunks.remainder() {
        t[0][digit(w, shift)] += f64::from(w);
    }
    for c in chunks {
        for (tj, &(w, _)) in t.iter_mut().zip(c) {
            tj[digit(w, shift)] += f64::from(w);
        }
    }
    let mut masses = [0.0f64; 256];
    for (d, m) in masses.iter_mut().enumerate() {
        *m = t.iter().map(|tj| tj[d]).sum();
    }
    masses
}

/// Finds the digit bucket where the mass, heaviest first, reaches `target`, and reorders `seg`
/// as [above the bucket | the bucket | below]. `None` if the target is out of reach.
fn split_at_crossing(seg: &mut [(f32, u32)], shift: u32, target: f64) -> Option<Split> {
    let masses = digit_masses(seg, shift);
    let mut above_mass = 0.0;
    let mut crossing = None;
    for d in (0..256).rev() {
        if masses[d] > 0.0 && above_mass + masses[d] >= target {
            crossing = Some(d);
            break;
        }
        above_mass += masses[d];
    }
    let d = crossing?;
    let above = move_to_front(seg, |w| digit(w, shift) > d);
    let bucket = move_to_front(&mut seg[above..], |w| digit(w, shift) == d);
    Some(Split { above, above_mass, bucket })
}

/// Collects the positive weights ≥ `floor` as `(weight, id)`: chunks without any are skipped by
/// one vectorized test, the others are filtered branch-free through a stack buffer.
fn collect_at_least(weights: &[f32], floor: f32, out: &mut Vec<(f32, u32)>) {
    const CHUNK: usize = 32;
    out.clear();
    let mut buf = [(0.0f32, 0u32); CHUNK];
    for (ci, chunk) in weights.chunks(CHUNK).enumerate() {
        if !any(chunk, |w| w >= floor) {
            continue;
        }
        let mut n = 0;
        for (j, &w) in chunk.iter().enumerate() {
            buf[n] = (w, (ci * CHUNK + j) as u32);
            n += usize::from(w >= floor && w > 0.0);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Moves the entries whose weight satisfies `pred` to the front; returns their count. Branch-free
/// Lomuto partition: everything in `n..i` fails `pred`, so swapping unconditionally is harmless.
fn move_to_front(list: &mut [(f32, u32)], pred: impl Fn(f32) -> bool) -> usize {
    let mut n = 0;
    for i in 0..list.len() {
        let keep = pred(list[i].0);
        list.swap(i, n);
        n += usize::from(keep);
    }
    n
}

/// Draws in proportion to the weights, skipping whole chunks by their sums.
pub(super) fn draw_in_place(weights: &[f32], total: f64, u: f64) -> u32 {
    const CHUNK: usize = 64;
    let target = u * total;
    let mut cum = 0.0;
    for (ci, chunk) in weights.chunks(CHUNK).enumerate() {
        let s = sum_f64(chunk);
        if cum + s > target {
            return (ci * CHUNK + scan(chunk, target - cum)) as u32;
        }
        cum += s;
    }
    weights.iter().rposition(|&w| w > 0.0).map_or(0, |i| i as u32)
}

/// Index of the first weight at which the running sum exceeds `target` (else the last positive).
fn scan(chunk: &[f32], target: f64) -> usize {
    let mut cum = 0.0;
    let mut last = 0;
    for (i, &w) in chunk.iter().enumerate() {
        if w > 0.0 {
            cum += f64::from(w);
            last = i;
            if cum > target {
                return i;
            }
        }
    }
    last
}
