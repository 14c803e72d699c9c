//! Every CUDA kernel against its CPU reference on fresh random inputs. Needs a GPU: built here with
//! `cargo test --features cuda --no-run` and run by scripts/gpu-check.sh. Skips when no GPU opens.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sconce_kernels::*;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("no CUDA device, skipping: {e}");
            None
        }
    }
}

fn random(rng: &mut StdRng, shape: &[usize], dtype: DType) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Max |gpu - cpu| relative to max |cpu|; panics on NaN or above the dtype's tolerance.
fn check(what: &str, gpu: &Tensor, cpu: &Tensor, dtype: DType) -> f32 {
    let (g, c) = (to_f32(gpu), to_f32(cpu));
    assert_eq!(g.len(), c.len(), "{what}: length");
    assert!(g.iter().all(|v| v.is_finite()), "{what}: non-finite GPU output");
    let scale = c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = g.iter().zip(&c).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    let tol = if dtype == DType::F32 { 1e-4 } else { 1e-2 };
    println!("{what} {dtype:?}: rel err {err:.2e}");
    assert!(err <= tol, "{what} {dtype:?}: relative error {err} > {tol}");
    err
}

struct Case {
    seqs: Vec<(usize, usize)>, // (query tokens, context length)
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

fn metadata(c: &Case, rng: &mut StdRng) -> (AttentionMetadata, usize) {
    let max_blocks = c.seqs.iter().map(|s| s.1.div_ceil(c.block_size)).max().unwrap();
    let num_blocks = max_blocks * c.seqs.len() + 3;
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    ids.shuffle(rng);
    let mut meta = AttentionMetadata { block_size: c.block_size, max_blocks_per_seq: max_blocks, ..Default::default() };
    meta.query_start_loc.push(0);
    for (s, &(q, ctx)) in c.seqs.iter().enumerate() {
        meta.query_start_loc.push(meta.query_start_loc[s] + q as u32);
        meta.context_lens.push(ctx as u32);
        meta.block_tables.extend_from_slice(&ids[s * max_blocks..(s + 1) * max_blocks]);
    }
    (meta, num_blocks)
}

fn attention_case(dev: &Device, c: &Case, dtype: DType, seed: u64) -> f32 {
    let mut rng = StdRng::seed_from_u64(seed);
    let (meta, num_blocks) = metadata(c, &mut rng);
    let tokens = meta.num_tokens();
    let q = random(&mut rng, &[tokens, c.heads, c.head_dim], dtype);
    let k = random(&mut rng, &[num_blocks, c.block_size, c.kv_heads, c.head_dim], dtype);
    let v = random(&mut rng, &[num_blocks, c.block_size, c.kv_heads, c.head_dim], dtype);
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let cpu = paged_attention(&q, &k, &v, Arc::new(meta.clone()), scale).unwrap();
    let to = |t: &Tensor| t.to_device(dev).unwrap();
    let gpu = paged_attention(&to(&q), &to(&k), &to(&v), Arc::new(meta), scale).unwrap();
    let what = format!("paged_attention seqs={:?} gqa={} d={}", c.seqs, c.heads / c.kv_heads, c.head_dim);
    check(&what, &gpu, &cpu, dtype)
}

#[test]
fn paged_attention_decode_matches_cpu() {
    let Some(dev) = gpu() else { return };
    for (heads, kv_heads) in [(8, 8), (32, 8), (32, 4)] {
        for dtype in [DType::BF16, DType::F16] {
            let seqs = vec![(1, 1), (1, 17), (1, 1000), (1, 8191)];
            let case = Case { seqs, heads, kv_heads, head_dim: 128, block_size: 16 };
            attention_case(&dev, &case, dtype, heads as u64);
        }
    }
    let case = Case { seqs: vec![(1, 333), (1, 64)], heads: 32, kv_heads: 8, head_dim: 64, block_size: 16 };
    attention_case(&dev, &case, DType::F32, 7);
}

#[test]
fn paged_attention_prefill_and_chunked_prefill_match_cpu() {
    let Some(dev) = gpu() else { return };
    for (heads, kv_heads, head_dim) in [(4, 4, 64), (32, 8, 128), (16, 2, 64)] {
        for dtype in [DType::BF16, DType::F16] {
            // A fresh prompt, a chunk on top of a cached prefix, and a decode, mixed in one batch.
            let seqs = vec![(37, 37), (64, 1500), (1, 4097), (5, 21)];
            let case = Case { seqs, heads, kv_heads, head_dim, block_size: 16 };
            attention_case(&dev, &case, dtype, head_dim as u64);
        }
    }
}

#[test]
fn reshape_and_cache_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let cache = random(&mut rng, &[9, 16, 4, 64], dtype);
        let new = random(&mut rng, &[21, 4, 64], dtype);
        let mut slots: Vec<u32> = (0..9 * 16).collect();
        slots.shuffle(&mut rng);
        let slots = Tensor::from_slice(&slots[..21], 21, &Device::Cpu).unwrap();
        let gpu_cache = cache.to_device(&dev).unwrap();
        reshape_and_cache(&cache, &new, &slots).unwrap();
        reshape_and_cache(&gpu_cache, &new.to_device(&dev).unwrap(), &slots.to_device(&dev).unwrap()).unwrap();
        assert_eq!(to_f32(&gpu_cache), to_f32(&cache), "{dtype:?}");
    }
}

#[test]
fn fused_ops_match_cpu() {
    let Some(dev) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    let to = |t: &Tensor| t.to_device(&dev).unwrap();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for (rows, dim) in [(1, 2048), (7, 4096), (33, 576)] {
            let (x, r, w) = (
                random(&mut rng, &[rows, dim], dtype),
                random(&mut rng, &[rows, dim], dtype),
                random(&mut rng, &[dim], dtype),
            );
            check("rms_norm", &rms_norm(&to(&x), &to(&w), 1e-5).unwrap(), &rms_norm(&x, &w, 1e-5).unwrap(), dtype);
            let (gs, gn) = add_rms_norm(&to(&x), &to(&r), &to(&w), 1e-5).unwrap();
            let (cs, cn) = add_rms_norm(&x, &r, &w, 1e-5).unwrap();
            check("add_rms_norm sum", &gs, &cs, dtype);
            check("add_rms_norm normed", &gn, &cn, dtype);
            let gu = random(&mut rng, &[rows, 2 * dim], dtype);
            check("silu_and_mul", &silu_and_mul(&to(&gu)).unwrap(), &silu_and_mul(&gu).unwrap(), dtype);
        }
        let (tokens, heads, rot, d) = (13, 48, 40, 128);
        let x = random(&mut rng, &[tokens, heads, d], dtype);
        let (cos, sin) = (random(&mut rng, &[tokens, d / 2], dtype), random(&mut rng, &[tokens, d / 2], dtype));
        let gx = to(&x);
        rotary_in_place(&gx, &to(&cos), &to(&sin), rot).unwrap();
        let cx = x.copy().unwrap();
        rotary_in_place(&cx, &cos, &sin, rot).unwrap();
        check("rotary", &gx, &cx, dtype);
    }
}

/// Device-to-device copy bandwidth (GB/s, read + write), printed as JSON. Run with --ignored.
#[test]
#[ignore]
fn copy_bandwidth() {
    let Some(dev) = gpu() else { return };
    let bytes = 1usize << 30;
    let src = Tensor::zeros(bytes / 2, DType::BF16, &dev).unwrap();
    let _ = src.copy().unwrap();
    dev.synchronize().unwrap();
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        let _ = src.copy().unwrap();
    }
    dev.synchronize().unwrap();
    let gbs = 2.0 * (bytes * reps) as f64 / start.elapsed().as_secs_f64() / 1e9;
    println!("{{\"copy_bandwidth_gbs\": {gbs:.1}}}");
}
