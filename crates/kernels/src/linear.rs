//! `y = x · Wᵀ` for f32 activations and f32/f16/bf16 weights stored `[out, in]`, accumulating in
//! f32. Decode is memory-bound, so weights stay in half precision and are widened in registers;
//! a 4-row × 4-token register tile keeps prefill compute-bound instead. With many tokens each task
//! widens its rows to f32 once and walks the tokens in L2-sized blocks, writing `[tokens, out]` directly.
//!
//! Every `(token, row)` result is computed by the same instruction sequence whatever the batch,
//! so outputs do not depend on which other sequences share the step.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::element::contiguous;

/// Output rows handled by one rayon task.
const ROWS_PER_TASK: usize = 32;

#[derive(Debug, Clone, Copy, Default)]
pub struct HalfWeightLinear;

/// `x [tokens, in]` (any float dtype, computed in f32) times `w [out, in]`ᵀ, giving f32 `[tokens, out]`.
pub fn linear_f32_acc(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let x = if x.dtype() == DType::F32 { x.contiguous()? } else { x.to_dtype(DType::F32)?.contiguous()? };
    x.apply_op2_no_bwd(&w.contiguous()?, &HalfWeightLinear)
}

/// Weight element types.
pub(crate) trait Weight: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Weight for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// One task's view: weight rows `[rows, inp]` and all activations `[tokens, inp]`.
pub(crate) struct Tile<'a, W> {
    pub w: &'a [W],
    pub x: &'a [f32],
    pub inp: usize,
    pub tokens: usize,
}

/// One task's columns of the shared output `y [tokens, out]`: rows `first..first + rows` of `w`.
pub(crate) struct Columns {
    y: *mut f32,
    out: usize,
    first: usize,
    rows: usize,
    tokens: usize,
}

// SAFETY: every task gets a disjoint column range of `y`, which outlives the parallel loop.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    /// Writes `y[token, first + row]`.
    #[inline(always)]
    pub(crate) fn set(&mut self, token: usize, row: usize, value: f32) {
        assert!(token < self.tokens && row < self.rows, "linear output index out of range");
        // SAFETY: in bounds (checked above) and no other task writes this column.
        unsafe { *self.y.add(token * self.out + self.first + row) = value };
    }
}

fn portable_rows<W: Weight>(tile: &Tile<W>, out: &mut Columns) {
    for (r, w) in tile.w.chunks_exact(tile.inp).enumerate() {
        for (t, x) in tile.x.chunks_exact(tile.inp).enumerate() {
            out.set(t, r, w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum());
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Columns, Tile, Weight};

    /// Tokens per block when weights are widened once: keeps a block of activations in L2.
    const TOKEN_BLOCK: usize = 64;

    /// Loads 16 weights as f32 lanes.
    pub(super) trait Lanes: Weight {
        /// # Safety
        /// `p` must point at 16 readable elements and the CPU must support AVX-512F.
        unsafe fn load16(p: *const Self) -> __m512;
    }

    impl Lanes for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
    }

    impl Lanes for f16 {
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        }
    }

    impl Lanes for bf16 {
        #[inline(always)]
        unsafe fn load16(p: *const Self) -> __m512 {
            unsafe {
                let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
            }
        }
    }

    /// `R` weight rows times `T` tokens, accumulated in `R * T` registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn micro<W: Lanes, const R: usize, const T: usize>(
        w: [*const W; R],
        x: [*const f32; T],
        inp: usize,
    ) -> [[f32; T]; R] {
        let body = inp / 16 * 16;
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i < body {
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                wv[r] = unsafe { W::load16(w[r].add(i)) };
            }
            for t in 0..T {
                let xv = unsafe { _mm512_loadu_ps(x[t].add(i)) };
                for r in 0..R {
                    acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
                }
            }
            i += 16;
        }
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                let mut tail = 0f32;
                for j in body..inp {
                    tail += unsafe { (*w[r].add(j)).to_f32() * *x[t].add(j) };
                }
                out[r][t] = _mm512_reduce_add_ps(acc[r][t]) + tail;
            }
        }
        out
    }

    /// Rows `r0..r0+R` against tokens `t0..t1`, four tokens at a time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_group<W: Lanes, const R: usize>(
        tile: &Tile<W>,
        r0: usize,
        (t0, t1): (usize, usize),
        out: &mut Columns,
    ) {
        let inp = tile.inp;
        let w: [*const W; R] = std::array::from_fn(|r| tile.w[(r0 + r) * inp..].as_ptr());
        let x = |t: usize| tile.x[t * inp..].as_ptr();
        let mut store = |t: usize, r: usize, vals: &[f32]| {
            vals.iter().enumerate().for_each(|(i, v)| out.set(t + i, r0 + r, *v));
        };
        let mut t = t0;
        while t + 4 <= t1 {
            let res = unsafe { micro::<W, R, 4>(w, [x(t), x(t + 1), x(t + 2), x(t + 3)], inp) };
            res.iter().enumerate().for_each(|(r, vals)| store(t, r, vals));
            t += 4;
        }
        while t < t1 {
            let res = unsafe { micro::<W, R, 1>(w, [x(t)], inp) };
            res.iter().enumerate().for_each(|(r, vals)| store(t, r, vals));
            t += 1;
        }
    }

    /// Asks for rows `first..first + count` (when they exist) to be brought into cache.
    #[inline(always)]
    fn prefetch_rows<W: Lanes>(tile: &Tile<W>, first: usize, count: usize) {
        let start = first * tile.inp;
        let end = ((first + count) * tile.inp).min(tile.w.len());
        if start >= end {
            return;
        }
        let base = tile.w[start..end].as_ptr().cast::<i8>();
        let total = (end - start) * std::mem::size_of::<W>();
        for offset in (0..total).step_by(64) {
            // SAFETY: offset stays within the slice; prefetching never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(offset)) };
        }
    }

    /// Widens `rows` weight rows into f32 `scratch`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn widen_rows<W: Lanes>(w: &[W], scratch: &mut [f32]) {
        let body = w.len() / 16 * 16;
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= body <= len of both slices.
            unsafe { _mm512_storeu_ps(scratch.as_mut_ptr().add(i), W::load16(w.as_ptr().add(i))) };
            i += 16;
        }
        for j in body..w.len() {
            scratch[j] = w[j].to_f32();
        }
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows<W: Lanes>(tile: &Tile<W>, out: &mut Columns) {
        // With many tokens, widen the task's rows once and walk the tokens in L2-sized blocks.
        if tile.tokens >= 8 && std::mem::size_of::<W>() != 4 {
            super::with_scratch(tile.w.len(), |scratch| {
                unsafe { widen_rows(tile.w, scratch) };
                let wide = Tile { w: &scratch[..], x: tile.x, inp: tile.inp, tokens: tile.tokens };
                unsafe { f32_blocked(&wide, out) };
            });
        } else {
            unsafe { all_rows(tile, (0, tile.tokens), out, true) };
        }
    }

    /// f32 rows already in cache (widened or dequantized), tokens in L2-sized blocks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f32_blocked(tile: &Tile<f32>, out: &mut Columns) {
        for t0 in (0..tile.tokens).step_by(TOKEN_BLOCK) {
            unsafe { all_rows(tile, (t0, (t0 + TOKEN_BLOCK).min(tile.tokens)), out, false) };
        }
    }

    /// Every row of the tile against tokens `t0..t1`, four rows at a time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn all_rows<W: Lanes>(tile: &Tile<W>, tokens: (usize, usize), out: &mut Columns, prefetch: bool) {
        let rows = tile.w.len() / tile.inp;
        let mut r = 0;
        while r + 4 <= rows {
            if prefetch {
                prefetch_rows(tile, r + 16, 4);
            }
            unsafe { row_group::<W, 4>(tile, r, tokens, out) };
            r += 4;
        }
        while r < rows {
            unsafe { row_group::<W, 1>(tile, r, tokens, out) };
            r += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn compute_rows<W: avx512::Lanes>(tile: &Tile<W>, out: &mut Columns) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available (checked above); slices bound every pointer used.
        unsafe { avx512::rows(tile, out) }
    } else {
        portable_rows(tile, out)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn compute_rows<W: Weight>(tile: &Tile<W>, out: &mut Columns) {
    portable_rows(tile, out)
}

/// Computes `y [tokens, out]` in blocks of weight rows (output columns) across threads.
#[cfg(target_arch = "x86_64")]
fn run<W: avx512::Lanes>(x: &[f32], w: &[W], tokens: usize, inp: usize, out: usize) -> Vec<f32> {
    run_with(x, w, tokens, inp, out, compute_rows::<W>)
}

#[cfg(not(target_arch = "x86_64"))]
fn run<W: Weight>(x: &[f32], w: &[W], tokens: usize, inp: usize, out: usize) -> Vec<f32> {
    run_with(x, w, tokens, inp, out, compute_rows::<W>)
}

fn run_with<W: Weight>(
    x: &[f32],
    w: &[W],
    tokens: usize,
    inp: usize,
    out: usize,
    kernel: fn(&Tile<W>, &mut Columns),
) -> Vec<f32> {
    run_tasks(tokens, out, |first, rows, columns| {
        kernel(&Tile { w: &w[first * inp..(first + rows) * inp], x, inp, tokens }, columns)
    })
}

/// Runs `task(first_row, rows, columns)` for every block of output rows in parallel; returns `y [tokens, out]`.
pub(crate) fn run_tasks(tokens: usize, out: usize, task: impl Fn(usize, usize, &mut Columns) + Sync) -> Vec<f32> {
    let mut y = vec![0f32; tokens * out];
    let y_ptr = y.as_mut_ptr() as usize;
    (0..out.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each(|index| {
        let first = index * ROWS_PER_TASK;
        let rows = ROWS_PER_TASK.min(out - first);
        task(first, rows, &mut Columns { y: y_ptr as *mut f32, out, first, rows, tokens });
    });
    y
}

/// f32 weight rows that are already in cache (dequantized or widened) against every token.
pub(crate) fn cached_f32_rows(tile: &Tile<f32>, out: &mut Columns) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available (checked above); slices bound every pointer used.
        return unsafe { avx512::f32_blocked(tile, out) };
    }
    portable_rows(tile, out)
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Lends this thread's reusable f32 buffer of `len` values (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buffer = cell.take();
        buffer.resize(len, 0.0);
        let result = f(&mut buffer[..len]);
        cell.replace(buffer);
        result
    })
}

impl CustomOp2 for HalfWeightLinear {
    fn name(&self) -> &'static str {
        "linear-f32-acc"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (tokens, inp) = xl.shape().dims2()?;
        let (out, w_in) = wl.shape().dims2()?;
        if inp != w_in || inp == 0 {
            candle_core::bail!("{name}: x {:?} does not match w {:?}", xl.shape(), wl.shape());
        }
        let CpuStorage::F32(x) = xs else { candle_core::bail!("{name}: activations must be f32") };
        let x = contiguous(x, xl, name)?;
        if tokens == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((0, out))));
        }
        let y = match ws {
            CpuStorage::F32(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            CpuStorage::F16(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            CpuStorage::BF16(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            _ => candle_core::bail!("{name}: weights must be f32, f16 or bf16"),
        };
        Ok((CpuStorage::F32(y), Shape::from((tokens, out))))
    }
}
