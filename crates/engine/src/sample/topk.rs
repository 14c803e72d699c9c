//! Partial selection of the `k` largest values without sorting the whole vocabulary.

use std::cmp::Ordering;

use super::kernels::any;

/// Up to this `k`, a single streaming pass with a small sorted buffer is used; above it,
/// `select_nth_unstable` on a copy of the whole vector.
const STREAM_MAX_K: usize = 64;

/// Rank order: larger value first, ties broken by lower id.
pub(super) fn rank_cmp(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Fills `out` with the `k` largest `(value, id)` of `values` in rank order. NaNs are skipped.
pub(super) fn top_k_into(values: &[f32], k: usize, out: &mut Vec<(f32, u32)>) {
    out.clear();
    if k == 0 {
        return;
    }
    if k <= STREAM_MAX_K {
        stream_top_k(values, k, out);
    } else {
        select_top_k(values, k, out);
    }
}

/// One pass keeping a sorted buffer of at most `k` entries. Typical cost O(V): once the buffer
/// is full, whole chunks are skipped by one vectorized comparison against the current k-th value.
fn stream_top_k(values: &[f32], k: usize, out: &mut Vec<(f32, u32)>) {
    const CHUNK: usize = 32;
    let mut floor = f32::NEG_INFINITY;
    for (ci, chunk) in values.chunks(CHUNK).enumerate() {
        if out.len() == k && !any(chunk, |x| x > floor) {
            continue;
        }
        for (j, &v) in chunk.iter().enumerate() {
            floor = offer(out, k, v, (ci * CHUNK + j) as u32, floor);
        }
    }
}

/// Inserts `(v, id)` if it ranks among the best `k`; returns the new k-th value.
fn offer(out: &mut Vec<(f32, u32)>, k: usize, v: f32, id: u32, floor: f32) -> f32 {
    let full = out.len() == k;
    if v.is_nan() || (full && v <= floor) {
        return floor;
    }
    if full {
        out.pop();
    }
    // After equal values, so earlier (lower) ids rank first.
    let pos = out.partition_point(|&(x, _)| x >= v);
    out.insert(pos, (v, id));
    out.last().map_or(floor, |&(last, _)| last)
}

fn select_top_k(values: &[f32], k: usize, out: &mut Vec<(f32, u32)>) {
    let finite = values.iter().enumerate().filter(|(_, v)| !v.is_nan());
    out.extend(finite.map(|(i, &v)| (v, i as u32)));
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, rank_cmp);
        out.truncate(k);
    }
    out.sort_unstable_by(rank_cmp);
}
