//! Int8 weights with one f32 scale per 32 values (GGML's Q8_0 layout) for CPU linears: about half
//! the bytes of f16, so memory-bound decode reads half as much. Decode dequantizes in registers;
//! with many tokens each task dequantizes its rows once into a cache-resident f32 buffer and runs
//! the f32 register tiles. Both compute `q * scale` then the same FMA chain, so a token's result
//! never depends on the batch it shares.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use crate::element::contiguous;
use crate::linear::{cached_f32_rows, run_tasks, with_scratch, Tile};

/// Values per scale.
pub const Q8_BLOCK: usize = 32;

/// A `[rows, cols]` matrix as int8 values and one scale per block of [`Q8_BLOCK`] in a row.
#[derive(Debug)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Matrix {
    /// Quantizes a 2-D float tensor; `cols` must be a multiple of [`Q8_BLOCK`].
    pub fn quantize(w: &Tensor) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        if cols % Q8_BLOCK != 0 {
            candle_core::bail!("q8_0 needs a row length that is a multiple of {Q8_BLOCK}, got {cols}");
        }
        let values: Vec<f32> = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut quants = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(values.len() / Q8_BLOCK);
        for block in values.chunks_exact(Q8_BLOCK) {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            quants.extend(block.iter().map(|v| (v * inverse).round().clamp(-127.0, 127.0) as i8));
            scales.push(scale);
        }
        Ok(Self { rows, cols, quants, scales })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held (values and scales).
    pub fn size_in_bytes(&self) -> usize {
        self.quants.len() + self.scales.len() * 4
    }

    /// The matrix back in f32 (for tests and references).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0, self.rows, &mut out);
        out
    }

    /// Rows `first..first + count` into `out` (`count * cols` values).
    fn dequantize_rows(&self, first: usize, count: usize, out: &mut [f32]) {
        let range = first * self.cols..(first + count) * self.cols;
        let (quants, scales) =
            (&self.quants[range.clone()], &self.scales[range.start / Q8_BLOCK..range.end / Q8_BLOCK]);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available (checked above).
            return unsafe { dequantize_avx512(quants, scales, out) };
        }
        for ((q, scale), o) in quants.chunks_exact(Q8_BLOCK).zip(scales).zip(out.chunks_exact_mut(Q8_BLOCK)) {
            for (v, o) in q.iter().zip(o) {
                *o = f32::from(*v) * scale;
            }
        }
    }
}

/// Same values as the portable loop: an exact int-to-float conversion, then one multiply.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dequantize_avx512(quants: &[i8], scales: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(quants.len() == scales.len() * Q8_BLOCK && out.len() >= quants.len());
    for (block, scale) in scales.iter().enumerate() {
        let scale = _mm512_set1_ps(*scale);
        for half in [0, 16] {
            let at = block * Q8_BLOCK + half;
            // SAFETY: `at + 16 <= quants.len() <= out.len()` (asserted above).
            unsafe {
                let bytes = _mm_loadu_si128(quants.as_ptr().add(at).cast());
                let values = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
                _mm512_storeu_ps(out.as_mut_ptr().add(at), _mm512_mul_ps(values, scale));
            }
        }
    }
}

/// `x [tokens, cols]` (computed in f32) times the Q8 weights transposed, giving f32 `[tokens, rows]`.
#[derive(Debug, Clone)]
pub struct Q8Linear {
    pub weights: Arc<Q8Matrix>,
}

/// Runs [`Q8Linear`] (CPU only).
pub fn linear_q8(x: &Tensor, weights: &Arc<Q8Matrix>) -> Result<Tensor> {
    let x = if x.dtype() == DType::F32 { x.contiguous()? } else { x.to_dtype(DType::F32)?.contiguous()? };
    x.apply_op1_no_bwd(&Q8Linear { weights: weights.clone() })
}

impl CustomOp1 for Q8Linear {
    fn name(&self) -> &'static str {
        "linear-q8_0"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (tokens, inp) = layout.shape().dims2()?;
        let (rows, cols) = self.weights.dims();
        if inp != cols {
            candle_core::bail!("{name}: x {:?} does not match weights [{rows}, {cols}]", layout.shape());
        }
        let CpuStorage::F32(x) = storage else { candle_core::bail!("{name}: activations must be f32") };
        let x = contiguous(x, layout, name)?;
        #[cfg(target_arch = "x86_64")]
        if tokens < 8 && std::arch::is_x86_feature_detected!("avx512f") {
            let y = run_tasks(tokens, rows, |first, count, columns| {
                // SAFETY: AVX-512F is available (checked above).
                unsafe { avx512::rows_in_registers(&self.weights, first, count, x, columns) }
            });
            return Ok((CpuStorage::F32(y), Shape::from((tokens, rows))));
        }
        let y = run_tasks(tokens, rows, |first, count, columns| {
            with_scratch(count * cols, |scratch| {
                self.weights.dequantize_rows(first, count, scratch);
                cached_f32_rows(&Tile { w: scratch, x, inp, tokens }, columns);
            })
        });
        Ok((CpuStorage::F32(y), Shape::from((tokens, rows))))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Q8Matrix, Q8_BLOCK};
    use crate::linear::Columns;

    /// Rows `first..first + count` against every token of `x`, dequantizing in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_in_registers(m: &Q8Matrix, first: usize, count: usize, x: &[f32], out: &mut Columns) {
        let tokens = x.len() / m.cols;
        let mut r = 0;
        while r + 4 <= count {
            prefetch(m, first + r + 16, 4);
            unsafe { row_group::<4>(m, first, r, x, tokens, out) };
            r += 4;
        }
        while r < count {
            unsafe { row_group::<1>(m, first, r, x, tokens, out) };
            r += 1;
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn row_group<const R: usize>(
        m: &Q8Matrix,
        first: usize,
        r0: usize,
        x: &[f32],
        tokens: usize,
        out: &mut Columns,
    ) {
        let x_row = |t: usize| x[t * m.cols..].as_ptr();
        let mut t = 0;
        while t + 4 <= tokens {
            let res = unsafe { micro::<R, 4>(m, first + r0, [x_row(t), x_row(t + 1), x_row(t + 2), x_row(t + 3)]) };
            for (r, vals) in res.iter().enumerate() {
                vals.iter().enumerate().for_each(|(i, v)| out.set(t + i, r0 + r, *v));
            }
            t += 4;
        }
        while t < tokens {
            let res = unsafe { micro::<R, 1>(m, first + r0, [x_row(t)]) };
            res.iter().enumerate().for_each(|(r, v)| out.set(t, r0 + r, v[0]));
            t += 1;
        }
    }

    /// `R` rows from `row` times `T` tokens. Per weight: int8 to f32, times its block's scale (the
    /// values `dequantize_rows` gives), then the FMA chain of the f32 tiles, so results match them bit for bit.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn micro<const R: usize, const T: usize>(m: &Q8Matrix, row: usize, x: [*const f32; T]) -> [[f32; T]; R] {
        let cols = m.cols;
        assert!((row + R) * cols <= m.quants.len() && cols.is_multiple_of(Q8_BLOCK));
        let quants: [*const i8; R] = std::array::from_fn(|r| m.quants[(row + r) * cols..].as_ptr());
        let scales: [&[f32]; R] = std::array::from_fn(|r| &m.scales[(row + r) * cols / Q8_BLOCK..]);
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let mut i = 0;
        while i < cols {
            let mut wv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let scale = _mm512_set1_ps(scales[r][i / Q8_BLOCK]);
                // SAFETY: i + 16 <= cols, inside row `row + r` (asserted above).
                let bytes = unsafe { _mm_loadu_si128(quants[r].add(i).cast()) };
                wv[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)), scale);
            }
            for t in 0..T {
                // SAFETY: each token row has `cols` values.
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
                // `+ 0.0` mirrors the f32 tiles' (empty) tail sum.
                out[r][t] = _mm512_reduce_add_ps(acc[r][t]) + 0f32;
            }
        }
        out
    }

    /// Asks for `count` rows from `row` (when they exist) to be brought into cache.
    #[inline(always)]
    fn prefetch(m: &Q8Matrix, row: usize, count: usize) {
        let start = (row * m.cols).min(m.quants.len());
        let end = ((row + count) * m.cols).min(m.quants.len());
        for offset in (start..end).step_by(64) {
            // SAFETY: offset is inside the slice; prefetching never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(m.quants.as_ptr().add(offset).cast()) };
        }
    }
}
