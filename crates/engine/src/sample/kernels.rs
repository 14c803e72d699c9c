//! Vocabulary-wide loops written so that LLVM vectorizes them (fixed-width lane arrays, no
//! libm calls, no early exits).

/// Lane count of the reduction loops (two SSE registers of f32).
const LANES: usize = 8;

/// Largest non-NaN value (`-inf` if there is none).
pub(super) fn max_of(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    lanes.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Whether `pred` holds for any value; evaluates all of them (no early exit), so it vectorizes.
#[inline]
pub(super) fn any(values: &[f32], pred: impl Fn(f32) -> bool) -> bool {
    values.iter().fold(false, |a, &x| a | pred(x))
}

/// `exp(x)` for `x <= 0` (larger inputs are clamped to 0) without libm, so loops over it vectorize.
/// Cephes `expf` range reduction and polynomial: relative error below 3e-7, `exp_neg(0) == 1`.
/// Inputs below -87 (where the result would be subnormal), `-inf` and NaN give 0.
#[inline(always)]
pub(super) fn exp_neg(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = if x > -87.0 { x } else { -87.0 };
    let xc = if xc < 0.0 { xc } else { 0.0 };
    let t = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let n_int = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    if x >= -87.0 {
        y * scale
    } else {
        0.0
    }
}

/// Replaces each `x` by `exp_neg((x - max) * scale)`; returns the sum of the results.
pub(super) fn exp_in_place(values: &mut [f32], max: f32, scale: f32) -> f64 {
    // A plain map loop (the sum is a separate pass) is what the loop vectorizer handles.
    for x in values.iter_mut() {
        *x = exp_neg((*x - max) * scale);
    }
    sum_f64(values)
}

/// `sum(exp(x - max))` without modifying `values` (exponentiates block-wise on the stack).
pub(super) fn exp_sum(values: &[f32], max: f32) -> f64 {
    const BLOCK: usize = 256;
    let mut tmp = [0.0f32; BLOCK];
    let mut total = 0.0;
    for block in values.chunks(BLOCK) {
        let tmp = &mut tmp[..block.len()];
        for (t, &x) in tmp.iter_mut().zip(block) {
            *t = exp_neg(x - max);
        }
        total += sum_f64(tmp);
    }
    total
}

/// Sum in f64 with independent lanes.
pub(super) fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f64::from(x);
        }
    }
    lanes.iter().sum::<f64>() + rest.iter().map(|&x| f64::from(x)).sum::<f64>()
}
