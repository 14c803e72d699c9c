//! `y = x · Wᵀ` for f32 activations and f32/f16/bf16 weights stored `[out, in]`, accumulating in
//! f32. Decode is memory-bound, so weights stay in half precision and are widened in registers;
//! a 4-row × 4-token register tile keeps prefill compute-bound instead.
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

/// One task's view: weight rows `[rows, inp]`, all activations, and its `[rows, tokens]` output.
struct Tile<'a, W> {
    w: &'a [W],
    x: &'a [f32],
    inp: usize,
    tokens: usize,
}

fn portable_rows<W: Weight>(tile: &Tile<W>, out: &mut [f32]) {
    for (r, y_row) in out.chunks_mut(tile.tokens).enumerate() {
        let w = &tile.w[r * tile.inp..(r + 1) * tile.inp];
        for (t, y) in y_row.iter_mut().enumerate() {
            let x = &tile.x[t * tile.inp..(t + 1) * tile.inp];
            *y = w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::{Tile, Weight};

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

    /// Rows `r0..r0+R` against every token, four tokens at a time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_group<W: Lanes, const R: usize>(tile: &Tile<W>, r0: usize, out: &mut [f32]) {
        let (inp, tokens) = (tile.inp, tile.tokens);
        let w: [*const W; R] = std::array::from_fn(|r| tile.w[(r0 + r) * inp..].as_ptr());
        let x = |t: usize| tile.x[t * inp..].as_ptr();
        let mut store =
            |t0: usize, vals: &[f32], r: usize| out[(r0 + r) * tokens + t0..][..vals.len()].copy_from_slice(vals);
        let mut t = 0;
        while t + 4 <= tokens {
            let res = unsafe { micro::<W, R, 4>(w, [x(t), x(t + 1), x(t + 2), x(t + 3)], inp) };
            res.iter().enumerate().for_each(|(r, v)| store(t, v, r));
            t += 4;
        }
        while t < tokens {
            let res = unsafe { micro::<W, R, 1>(w, [x(t)], inp) };
            res.iter().enumerate().for_each(|(r, v)| store(t, v, r));
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
    pub(super) unsafe fn rows<W: Lanes>(tile: &Tile<W>, out: &mut [f32]) {
        let rows = tile.w.len() / tile.inp;
        // With many tokens, widen each 4-row group once instead of once per 4 tokens.
        let widen = tile.tokens >= 8 && std::mem::size_of::<W>() != 4;
        let mut scratch = if widen { vec![0f32; 4 * tile.inp] } else { Vec::new() };
        let mut r = 0;
        while r + 4 <= rows {
            prefetch_rows(tile, r + 16, 4);
            if widen {
                unsafe { widen_rows(&tile.w[r * tile.inp..(r + 4) * tile.inp], &mut scratch) };
                let wide = Tile { w: &scratch[..], x: tile.x, inp: tile.inp, tokens: tile.tokens };
                let group = &mut out[r * tile.tokens..(r + 4) * tile.tokens];
                unsafe { row_group::<f32, 4>(&wide, 0, group) };
            } else {
                unsafe { row_group::<W, 4>(tile, r, out) };
            }
            r += 4;
        }
        while r < rows {
            unsafe { row_group::<W, 1>(tile, r, out) };
            r += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn compute_rows<W: avx512::Lanes>(tile: &Tile<W>, out: &mut [f32]) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is available (checked above); slices bound every pointer used.
        unsafe { avx512::rows(tile, out) }
    } else {
        portable_rows(tile, out)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn compute_rows<W: Weight>(tile: &Tile<W>, out: &mut [f32]) {
    portable_rows(tile, out)
}

/// Computes `yᵀ [out, tokens]` in row blocks across threads, then transposes.
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
    kernel: fn(&Tile<W>, &mut [f32]),
) -> Vec<f32> {
    let mut yt = vec![0f32; out * tokens];
    yt.par_chunks_mut(ROWS_PER_TASK * tokens).enumerate().for_each(|(task, block)| {
        let first = task * ROWS_PER_TASK;
        let rows = block.len() / tokens;
        let tile = Tile { w: &w[first * inp..(first + rows) * inp], x, inp, tokens };
        kernel(&tile, block);
    });
    if tokens == 1 {
        return yt;
    }
    let mut y = vec![0f32; tokens * out];
    for (o, col) in yt.chunks(tokens).enumerate() {
        for (t, v) in col.iter().enumerate() {
            y[t * out + o] = *v;
        }
    }
    y
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
