//! Varlen causal attention over a paged KV cache (prefill, chunked prefill and decode in one op).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::element::{contiguous, Element};
use crate::metadata::AttentionMetadata;

/// `q`: `[num_tokens, num_heads, head_dim]`; caches: `[num_blocks, block_size, num_kv_heads, head_dim]`.
/// Output: `[num_tokens, num_heads, head_dim]` in q's dtype.
#[derive(Debug, Clone)]
pub struct PagedAttention {
    pub metadata: Arc<AttentionMetadata>,
    pub scale: f32,
}

/// Runs paged attention; see [`PagedAttention`].
pub fn paged_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    metadata: Arc<AttentionMetadata>,
    scale: f32,
) -> Result<Tensor> {
    q.apply_op3_no_bwd(k_cache, v_cache, &PagedAttention { metadata, scale })
}

/// Shapes of one call, checked once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub num_tokens: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Query heads one GPU block serves: the largest divisor of the GQA group size that is at most 8.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn heads_per_block(group: usize) -> usize {
    (1..=group.clamp(1, 8)).rev().find(|g| group.is_multiple_of(*g)).unwrap_or(1)
}

/// Split-K plan for the GPU kernel: `(splits, positions per split)`. Splits the context until the
/// grid has enough blocks to fill the GPU, keeping at least 64 positions per split.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn plan_splits(num_tokens: usize, head_groups: usize, max_len: usize) -> (usize, usize) {
    const TARGET_BLOCKS: usize = 528; // about four per SM on a 132-SM H100
    let max_len = max_len.max(1);
    let blocks = (num_tokens * head_groups).max(1);
    let splits = TARGET_BLOCKS.div_ceil(blocks).clamp(1, (max_len / 64).clamp(1, 64));
    let partition = max_len.div_ceil(splits);
    (max_len.div_ceil(partition), partition)
}

impl PagedAttention {
    pub(crate) fn dims(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<Dims> {
        let (num_tokens, num_heads, head_dim) = q.shape().dims3()?;
        let (num_blocks, block_size, num_kv_heads, kv_dim) = k.shape().dims4()?;
        if k.shape() != v.shape() {
            candle_core::bail!("paged_attention: k and v caches differ in shape");
        }
        if kv_dim != head_dim || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            candle_core::bail!("paged_attention: q {:?} does not fit cache {:?}", q.shape(), k.shape());
        }
        if block_size != self.metadata.block_size || num_tokens != self.metadata.num_tokens() {
            candle_core::bail!("paged_attention: metadata does not match the tensors");
        }
        if let Err(e) = self.metadata.validate(num_blocks) {
            candle_core::bail!("paged_attention: {e}");
        }
        Ok(Dims { num_tokens, num_heads, num_kv_heads, head_dim })
    }

    fn run<T: Element>(&self, q: &[T], k: &[T], v: &[T], d: Dims) -> Vec<T> {
        let row = d.num_heads * d.head_dim;
        let mut out = vec![T::from_f32(0.0); d.num_tokens * row];
        let meta = &*self.metadata;
        let token_seq = token_to_seq(meta);
        out.par_chunks_mut(d.head_dim).enumerate().for_each(|(idx, out_head)| {
            let (token, head) = (idx / d.num_heads, idx % d.num_heads);
            let seq = token_seq[token];
            let q_start = meta.query_start_loc[seq] as usize;
            let q_len = meta.query_start_loc[seq + 1] as usize - q_start;
            let ctx = meta.context_lens[seq] as usize;
            let pos = ctx - q_len + (token - q_start);
            let query = &q[token * row + head * d.head_dim..][..d.head_dim];
            let kv_head = head / (d.num_heads / d.num_kv_heads);
            let keys = KvView { k, v, blocks: meta.block_row(seq), block_size: meta.block_size, kv_head, d };
            attend_one(query, &keys, pos + 1, self.scale, out_head);
        });
        out
    }
}

/// Maps each flattened token to its sequence.
fn token_to_seq(meta: &AttentionMetadata) -> Vec<usize> {
    let mut map = Vec::with_capacity(meta.num_tokens());
    for s in 0..meta.num_seqs() {
        let n = meta.query_start_loc[s + 1] - meta.query_start_loc[s];
        map.extend(std::iter::repeat_n(s, n as usize));
    }
    map
}

/// One sequence's keys and values for one KV head, read through its block table.
struct KvView<'a, T> {
    k: &'a [T],
    v: &'a [T],
    blocks: &'a [u32],
    block_size: usize,
    kv_head: usize,
    d: Dims,
}

impl<T: Element> KvView<'_, T> {
    fn offset(&self, position: usize) -> usize {
        let block = self.blocks[position / self.block_size] as usize;
        let slot = block * self.block_size + position % self.block_size;
        (slot * self.d.num_kv_heads + self.kv_head) * self.d.head_dim
    }

    /// Where position `start`'s block begins in the cache, and how many of its rows are below `len`.
    #[inline(always)]
    fn block_rows(&self, start: usize, len: usize) -> (usize, usize) {
        let in_block = start % self.block_size;
        let rows = (self.block_size - in_block).min(len - start);
        (self.offset(start), rows)
    }

    #[inline(always)]
    fn key(&self, position: usize) -> &[T] {
        &self.k[self.offset(position)..][..self.d.head_dim]
    }

    #[inline(always)]
    fn value(&self, position: usize) -> &[T] {
        &self.v[self.offset(position)..][..self.d.head_dim]
    }
}

/// Softmax(q·K / sqrt(d))·V over the first `len` positions: all scores first, then one exp each.
fn attend_one<T: Element>(query: &[T], kv: &KvView<'_, T>, len: usize, scale: f32, out: &mut [T]) {
    let q: Vec<f32> = query.iter().map(|x| x.to_f32() * scale).collect();
    let mut acc = vec![0f32; q.len()];
    #[cfg(target_arch = "x86_64")]
    if let (Some(k), Some(v), true) = (T::as_f32(kv.k), T::as_f32(kv.v), std::arch::is_x86_feature_detected!("avx512f"))
    {
        let view = KvView { k, v, blocks: kv.blocks, block_size: kv.block_size, kv_head: kv.kv_head, d: kv.d };
        // SAFETY: AVX-512F is available (checked above).
        unsafe { avx512::attend(&q, &view, len, &mut acc) };
        return store(&acc, out);
    }
    let mut weights: Vec<f32> = (0..len).map(|p| q.iter().zip(kv.key(p)).map(|(a, b)| a * b.to_f32()).sum()).collect();
    let sum = softmax_in_place(&mut weights);
    for (position, weight) in weights.iter().enumerate() {
        for (a, v) in acc.iter_mut().zip(kv.value(position)) {
            *a += weight * v.to_f32();
        }
    }
    acc.iter_mut().for_each(|a| *a /= sum);
    store(&acc, out)
}

/// `exp(w - max)` for every score; returns their sum (at least the smallest positive float).
fn softmax_in_place(weights: &mut [f32]) -> f32 {
    let max = weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for w in weights.iter_mut() {
        *w = (*w - max).exp();
        sum += *w;
    }
    sum.max(f32::MIN_POSITIVE)
}

fn store<T: Element>(acc: &[f32], out: &mut [T]) {
    for (o, a) in out.iter_mut().zip(acc) {
        *o = T::from_f32(*a);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{softmax_in_place, KvView};

    /// The f32 cache path of `attend_one`: 16-lane dot products and value updates.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attend(q: &[f32], kv: &KvView<'_, f32>, len: usize, acc: &mut [f32]) {
        let (dim, stride) = (kv.d.head_dim, kv.d.num_kv_heads * kv.d.head_dim);
        let mut weights = Vec::with_capacity(len);
        let mut start = 0;
        while start < len {
            let (base, rows) = kv.block_rows(start, len);
            for row in 0..rows {
                let at = base + row * stride;
                weights.push(unsafe { dot(q, &kv.k[at..at + dim]) });
            }
            start += rows;
        }
        let inv = 1.0 / softmax_in_place(&mut weights);
        let mut start = 0;
        while start < len {
            let (base, rows) = kv.block_rows(start, len);
            for row in 0..rows {
                let at = base + row * stride;
                unsafe { axpy(acc, weights[start + row] * inv, &kv.v[at..at + dim]) };
            }
            start += rows;
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let body = n / 16 * 16;
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= body <= the length of both slices.
            sum =
                unsafe { _mm512_fmadd_ps(_mm512_loadu_ps(a.as_ptr().add(i)), _mm512_loadu_ps(b.as_ptr().add(i)), sum) };
            i += 16;
        }
        let tail: f32 = a[body..n].iter().zip(&b[body..n]).map(|(x, y)| x * y).sum();
        _mm512_reduce_add_ps(sum) + tail
    }

    /// `acc += w * x`.
    #[target_feature(enable = "avx512f")]
    unsafe fn axpy(acc: &mut [f32], w: f32, x: &[f32]) {
        let n = acc.len().min(x.len());
        let body = n / 16 * 16;
        let wv = _mm512_set1_ps(w);
        let mut i = 0;
        while i < body {
            // SAFETY: i + 16 <= body <= the length of both slices.
            unsafe {
                let p = acc.as_mut_ptr().add(i);
                _mm512_storeu_ps(p, _mm512_fmadd_ps(wv, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(p)));
            }
            i += 16;
        }
        for j in body..n {
            acc[j] += w * x[j];
        }
    }
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(ql, kl, vl)?;
        let name = self.name();
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => CpuStorage::F32(self.run(
                contiguous(q, ql, name)?,
                contiguous(k, kl, name)?,
                contiguous(v, vl, name)?,
                d,
            )),
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => CpuStorage::F16(self.run::<f16>(
                contiguous(q, ql, name)?,
                contiguous(k, kl, name)?,
                contiguous(v, vl, name)?,
                d,
            )),
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => CpuStorage::BF16(self.run::<bf16>(
                contiguous(q, ql, name)?,
                contiguous(k, kl, name)?,
                contiguous(v, vl, name)?,
                d,
            )),
            _ => candle_core::bail!("paged_attention: q, k and v must share a float dtype"),
        };
        Ok((out, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &Layout,
        k: &candle_core::CudaStorage,
        kl: &Layout,
        v: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = self.cuda_run((q, ql), (k, kl), (v, vl))?;
        Ok((out, ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::{heads_per_block, plan_splits};

    #[test]
    fn head_groups_divide_the_gqa_ratio() {
        assert_eq!([1, 4, 8, 16, 12, 7].map(heads_per_block), [1, 4, 8, 8, 6, 7]);
    }

    #[test]
    fn splits_cover_the_context_and_fill_the_gpu() {
        for (tokens, groups, len) in [(1, 8, 8192), (1, 4, 100), (32, 8, 1000), (2048, 32, 2048), (1, 1, 1)] {
            let (splits, part) = plan_splits(tokens, groups, len);
            assert!(splits * part >= len && (splits - 1) * part < len, "{tokens} {groups} {len}");
            assert!(splits == 1 || part >= 64);
        }
        assert_eq!(plan_splits(2048, 32, 2048).0, 1);
        assert!(plan_splits(1, 8, 8192).0 >= 32);
    }
}
