//! The paged ops against a naive contiguous attention on the same random inputs.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use sconce_kernels::{paged_attention, reshape_and_cache, AttentionMetadata};

struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    /// (context length after this step, query tokens this step) per sequence.
    seqs: Vec<(usize, usize)>,
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Plain softmax attention: query `t` of a sequence sees keys `0..=pos`.
fn naive(q: &[f32], k: &[f32], v: &[f32], c: &Case, ctx: usize, q_len: usize) -> Vec<f32> {
    let (d, group) = (c.head_dim, c.heads / c.kv_heads);
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; q_len * c.heads * d];
    for t in 0..q_len {
        let pos = ctx - q_len + t;
        for h in 0..c.heads {
            let qv = &q[(t * c.heads + h) * d..][..d];
            let kvh = h / group;
            let scores: Vec<f32> = (0..=pos)
                .map(|j| {
                    let kr = &k[(j * c.kv_heads + kvh) * d..][..d];
                    qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            let o = &mut out[(t * c.heads + h) * d..][..d];
            for (j, e) in exps.iter().enumerate() {
                let vr = &v[(j * c.kv_heads + kvh) * d..][..d];
                for (x, y) in o.iter_mut().zip(vr) {
                    *x += e / sum * y;
                }
            }
        }
    }
    out
}

/// Fills a paged cache with each sequence's full K/V via `reshape_and_cache` (blocks shuffled),
/// runs paged attention, and returns the max abs error against `naive`.
fn max_error(c: &Case, dtype: DType, seed: u64) -> f32 {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    let (d, kvh) = (c.head_dim, c.kv_heads);
    let max_blocks = c.seqs.iter().map(|s| s.0.div_ceil(c.block_size)).max().unwrap_or(1);
    let num_blocks = max_blocks * c.seqs.len() + 3;
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    free.shuffle(&mut rng);
    let shape = (num_blocks, c.block_size, kvh, d);
    let k_cache = Tensor::zeros(shape, dtype, &dev).unwrap();
    let v_cache = Tensor::zeros(shape, dtype, &dev).unwrap();
    let mut meta = AttentionMetadata { block_size: c.block_size, max_blocks_per_seq: max_blocks, ..Default::default() };
    meta.query_start_loc.push(0);
    let (mut queries, mut expected) = (Vec::new(), Vec::new());
    for &(ctx, q_len) in &c.seqs {
        let blocks: Vec<u32> = (0..max_blocks).map(|_| free.pop().unwrap()).collect();
        let slots: Vec<u32> =
            (0..ctx).map(|p| blocks[p / c.block_size] * c.block_size as u32 + (p % c.block_size) as u32).collect();
        let (k, v) = (random(&mut rng, ctx * kvh * d), random(&mut rng, ctx * kvh * d));
        let kt = Tensor::from_slice(&k, (ctx, kvh, d), &dev).unwrap().to_dtype(dtype).unwrap();
        let vt = Tensor::from_slice(&v, (ctx, kvh, d), &dev).unwrap().to_dtype(dtype).unwrap();
        let st = Tensor::from_slice(&slots, ctx, &dev).unwrap();
        reshape_and_cache(&k_cache, &kt, &st).unwrap();
        reshape_and_cache(&v_cache, &vt, &st).unwrap();
        // Compare against the values as the cache stores them (rounded to dtype).
        let k = kt.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v = vt.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let q = random(&mut rng, q_len * c.heads * d);
        let qt = Tensor::from_slice(&q, (q_len, c.heads, d), &dev).unwrap().to_dtype(dtype).unwrap();
        let q = qt.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        expected.extend(naive(&q, &k, &v, c, ctx, q_len));
        queries.push(qt);
        meta.block_tables.extend(&blocks);
        meta.context_lens.push(ctx as u32);
        meta.query_start_loc.push(meta.query_start_loc.last().unwrap() + q_len as u32);
    }
    let q = Tensor::cat(&queries, 0).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    let out = paged_attention(&q, &k_cache, &v_cache, Arc::new(meta), scale).unwrap();
    let got = out.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(got.iter().all(|x| x.is_finite()), "NaN or inf in the output");
    got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn mixed_case(heads: usize, kv_heads: usize) -> Case {
    // Decode (q 1), a full prefill, a chunked prefill over cached blocks, lengths off block multiples.
    Case {
        heads,
        kv_heads,
        head_dim: 32,
        block_size: 16,
        seqs: vec![(1, 1), (37, 1), (50, 50), (70, 23), (16, 16), (129, 5)],
    }
}

#[test]
fn matches_naive_attention_in_f32_for_gqa_ratios() {
    for (i, (heads, kv)) in [(4, 4), (8, 2), (8, 1)].into_iter().enumerate() {
        let err = max_error(&mixed_case(heads, kv), DType::F32, i as u64);
        assert!(err < 1e-5, "heads {heads}/{kv}: max error {err}");
    }
}

#[test]
fn matches_naive_attention_in_half_precision() {
    for dtype in [DType::F16, DType::BF16] {
        let err = max_error(&mixed_case(8, 2), dtype, 7);
        assert!(err < 2e-2, "{dtype:?}: max error {err}");
    }
}

#[test]
fn long_context_decode_is_accurate() {
    let case = Case { heads: 8, kv_heads: 1, head_dim: 64, block_size: 16, seqs: vec![(2049, 1), (1000, 3)] };
    let err = max_error(&case, DType::F32, 3);
    assert!(err < 1e-5, "max error {err}");
}

#[test]
fn rejects_inconsistent_metadata() {
    let dev = Device::Cpu;
    let q = Tensor::zeros((2, 4, 8), DType::F32, &dev).unwrap();
    let cache = Tensor::zeros((2, 4, 2, 8), DType::F32, &dev).unwrap();
    // Context 1 but two query tokens.
    let meta = AttentionMetadata {
        query_start_loc: vec![0, 2],
        context_lens: vec![1],
        block_tables: vec![0],
        max_blocks_per_seq: 1,
        block_size: 4,
        ..Default::default()
    };
    assert!(paged_attention(&q, &cache, &cache, Arc::new(meta), 1.0).is_err());
    let slots = Tensor::from_slice(&[0u32, 99], 2, &dev).unwrap();
    let rows = Tensor::zeros((2, 2, 8), DType::F32, &dev).unwrap();
    assert!(reshape_and_cache(&cache, &rows, &slots).is_err(), "out-of-range slot must fail");
}

#[test]
fn half_weight_linear_matches_a_naive_matmul() {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(9);
    for (tokens, inp, out) in [(1, 40, 33), (5, 64, 17), (9, 100, 48), (70, 24, 37)] {
        let x = random(&mut rng, tokens * inp);
        let w = random(&mut rng, out * inp);
        let xt = Tensor::from_slice(&x, (tokens, inp), &dev).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let wt = Tensor::from_slice(&w, (out, inp), &dev).unwrap().to_dtype(dtype).unwrap();
            let wr: Vec<f32> = wt.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got: Vec<f32> =
                sconce_kernels::linear_f32_acc(&xt, &wt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for t in 0..tokens {
                for o in 0..out {
                    let expected: f32 = (0..inp).map(|i| x[t * inp + i] * wr[o * inp + i]).sum();
                    let g = got[t * out + o];
                    assert!(
                        (g - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                        "{dtype:?} [{t},{o}]: {g} vs {expected}"
                    );
                }
            }
        }
    }
}

#[test]
fn half_weight_linear_gives_each_token_the_same_bits_alone_or_in_a_batch() {
    let dev = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(11);
    let (tokens, inp, out) = (70, 40, 37);
    let x = random(&mut rng, tokens * inp);
    let w = random(&mut rng, out * inp);
    let xt = Tensor::from_slice(&x, (tokens, inp), &dev).unwrap();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let wt = Tensor::from_slice(&w, (out, inp), &dev).unwrap().to_dtype(dtype).unwrap();
        let batch: Vec<Vec<f32>> = sconce_kernels::linear_f32_acc(&xt, &wt).unwrap().to_vec2().unwrap();
        for (t, row) in batch.iter().enumerate() {
            let alone: Vec<Vec<f32>> =
                sconce_kernels::linear_f32_acc(&xt.narrow(0, t, 1).unwrap(), &wt).unwrap().to_vec2().unwrap();
            assert_eq!(row, &alone[0], "{dtype:?} token {t}");
        }
    }
}
