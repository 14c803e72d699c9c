//! `y = x · Wᵀ` for f32 activations and f32/f16/bf16 weights stored `[out, in]`, accumulating in
//! f32. Decode is memory-bound, so weights stay in half precision and each row is read once per
//! step for every token of the batch.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use crate::element::contiguous;

/// Output rows handled by one rayon task.
const ROWS_PER_TASK: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
pub struct HalfWeightLinear;

/// `x [tokens, in]` (f32) times `w [out, in]`ᵀ, giving f32 `[tokens, out]`.
pub fn linear_f32_acc(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let x = if x.dtype() == DType::F32 { x.contiguous()? } else { x.to_dtype(DType::F32)?.contiguous()? };
    x.apply_op2_no_bwd(&w.contiguous()?, &HalfWeightLinear)
}

/// Weight element types: each converts a row to f32.
trait WeightRow: Copy + Send + Sync {
    fn widen(row: &[Self], out: &mut [f32]);
}

impl WeightRow for f32 {
    fn widen(row: &[Self], out: &mut [f32]) {
        out.copy_from_slice(row);
    }
}

impl WeightRow for f16 {
    fn widen(row: &[Self], out: &mut [f32]) {
        row.convert_to_f32_slice(out);
    }
}

impl WeightRow for bf16 {
    fn widen(row: &[Self], out: &mut [f32]) {
        row.convert_to_f32_slice(out);
    }
}

/// Dot products of one weight row with `N` activation rows at once.
#[inline(always)]
fn dot_n<const N: usize>(w: &[f32], x: [&[f32]; N]) -> [f32; N] {
    const L: usize = 16;
    let mut acc = [[0f32; L]; N];
    let n = w.len() / L * L;
    for i in (0..n).step_by(L) {
        let wc = &w[i..i + L];
        for (a, xr) in acc.iter_mut().zip(x) {
            let xc = &xr[i..i + L];
            for l in 0..L {
                a[l] += wc[l] * xc[l];
            }
        }
    }
    let mut out = [0f32; N];
    for (k, (a, xr)) in acc.iter().zip(x).enumerate() {
        let tail: f32 = w[n..].iter().zip(&xr[n..]).map(|(p, q)| p * q).sum();
        out[k] = a.iter().sum::<f32>() + tail;
    }
    out
}

/// The dot kernels for one instruction set.
#[derive(Clone, Copy)]
struct DotKernels {
    one: fn(&[f32], [&[f32]; 1]) -> [f32; 1],
    four: fn(&[f32], [&[f32]; 4]) -> [f32; 4],
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub fn one_avx512(w: &[f32], x: [&[f32]; 1]) -> [f32; 1] {
        super::dot_n(w, x)
    }
    #[target_feature(enable = "avx512f")]
    pub fn four_avx512(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
        super::dot_n(w, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub fn one_avx2(w: &[f32], x: [&[f32]; 1]) -> [f32; 1] {
        super::dot_n(w, x)
    }
    #[target_feature(enable = "avx2,fma")]
    pub fn four_avx2(w: &[f32], x: [&[f32]; 4]) -> [f32; 4] {
        super::dot_n(w, x)
    }
}

/// The widest dot kernels this CPU runs.
fn pick_kernels() -> DotKernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked above.
            return DotKernels { one: |w, x| unsafe { x86::one_avx512(w, x) }, four: |w, x| unsafe { x86::four_avx512(w, x) } };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked above.
            return DotKernels { one: |w, x| unsafe { x86::one_avx2(w, x) }, four: |w, x| unsafe { x86::four_avx2(w, x) } };
        }
    }
    DotKernels { one: dot_n::<1>, four: dot_n::<4> }
}

/// Dots one widened weight row with every activation row, four at a time.
fn dot_row(k: DotKernels, row: &[f32], x: &[f32], inp: usize, y_row: &mut [f32]) {
    let tokens = y_row.len();
    let xr = |t: usize| &x[t * inp..(t + 1) * inp];
    let mut t = 0;
    while t + 4 <= tokens {
        y_row[t..t + 4].copy_from_slice(&(k.four)(row, [xr(t), xr(t + 1), xr(t + 2), xr(t + 3)]));
        t += 4;
    }
    for (t, y) in y_row.iter_mut().enumerate().skip(t) {
        *y = (k.one)(row, [xr(t)])[0];
    }
}

/// Computes `yᵀ [out, tokens]` row block by row block, then transposes.
fn run<W: WeightRow>(x: &[f32], w: &[W], tokens: usize, inp: usize, out: usize) -> Vec<f32> {
    let kernels = pick_kernels();
    let mut yt = vec![0f32; out * tokens];
    yt.par_chunks_mut(ROWS_PER_TASK * tokens).enumerate().for_each(|(task, block)| {
        let mut row = vec![0f32; inp];
        for (r, y_row) in block.chunks_mut(tokens).enumerate() {
            let o = task * ROWS_PER_TASK + r;
            W::widen(&w[o * inp..(o + 1) * inp], &mut row);
            dot_row(kernels, &row, x, inp, y_row);
        }
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
        if inp != w_in {
            candle_core::bail!("{name}: x {:?} does not match w {:?}", xl.shape(), wl.shape());
        }
        let CpuStorage::F32(x) = xs else { candle_core::bail!("{name}: activations must be f32") };
        let x = contiguous(x, xl, name)?;
        let y = match ws {
            CpuStorage::F32(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            CpuStorage::F16(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            CpuStorage::BF16(w) => run(x, contiguous(w, wl, name)?, tokens, inp, out),
            _ => candle_core::bail!("{name}: weights must be f32, f16 or bf16"),
        };
        Ok((CpuStorage::F32(y), Shape::from((tokens, out))))
    }
}
