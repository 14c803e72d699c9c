//! The fused ops' CPU references against naive formulas written independently here.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sconce_kernels::{add_rms_norm, rms_norm, rotary_in_place, silu_and_mul};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 4e-3,
        _ => 2e-2,
    }
}

fn assert_close(got: &[f32], want: &[f32], dtype: DType, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol(dtype) * (1.0 + w.abs()), "{what} {dtype:?} [{i}]: {g} vs {w}");
    }
}

fn naive_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let dim = w.len();
    x.chunks(dim)
        .flat_map(|row| {
            let rms = (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + eps).sqrt();
            row.iter().zip(w).map(move |(v, w)| v / rms * w)
        })
        .collect()
}

#[test]
fn rms_norm_matches_the_formula() {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(1));
    for (rows, dim) in [(1, 8), (3, 100), (7, 2048)] {
        let (x, w) = (random(&mut rng, rows * dim), random(&mut rng, dim));
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let xt = Tensor::from_slice(&x, (rows, dim), &dev).unwrap().to_dtype(dtype).unwrap();
            let wt = Tensor::from_slice(&w, dim, &dev).unwrap().to_dtype(dtype).unwrap();
            let want = naive_norm(&to_vec(&xt), &to_vec(&wt), 1e-5);
            assert_close(&to_vec(&rms_norm(&xt, &wt, 1e-5).unwrap()), &want, dtype, "rms_norm");
        }
    }
}

#[test]
fn add_rms_norm_returns_the_sum_and_its_norm() {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(2));
    let (rows, dim) = (5, 64);
    let (x, r, w) = (random(&mut rng, rows * dim), random(&mut rng, rows * dim), random(&mut rng, dim));
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let t = |v: &[f32], s: (usize, usize)| Tensor::from_slice(v, s, &dev).unwrap().to_dtype(dtype).unwrap();
        let (xt, rt) = (t(&x, (rows, dim)), t(&r, (rows, dim)));
        let wt = Tensor::from_slice(&w, dim, &dev).unwrap().to_dtype(dtype).unwrap();
        let (sum, normed) = add_rms_norm(&xt, &rt, &wt, 1e-6).unwrap();
        let want_sum = to_vec(&(&xt + &rt).unwrap());
        assert_close(&to_vec(&sum), &want_sum, dtype, "sum");
        assert_close(&to_vec(&normed), &naive_norm(&want_sum, &to_vec(&wt), 1e-6), dtype, "normed");
        assert_eq!(normed.dims(), &[rows, dim]);
    }
}

#[test]
fn rotary_rotates_halves_in_place_and_spares_other_heads() {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(3));
    let (tokens, heads, rot, dim) = (4, 5, 3, 16);
    let x = random(&mut rng, tokens * heads * dim);
    let angles = random(&mut rng, tokens * dim / 2);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let xt = Tensor::from_slice(&x, (tokens, heads, dim), &dev).unwrap().to_dtype(dtype).unwrap();
        let before = to_vec(&xt);
        let table = |f: fn(f32) -> f32| {
            let v: Vec<f32> = angles.iter().map(|a| f(*a)).collect();
            Tensor::from_slice(&v, (tokens, dim / 2), &dev).unwrap().to_dtype(dtype).unwrap()
        };
        let (cos, sin) = (table(f32::cos), table(f32::sin));
        let (c, s) = (to_vec(&cos), to_vec(&sin));
        rotary_in_place(&xt, &cos, &sin, rot).unwrap();
        let mut want = before.clone();
        for t in 0..tokens {
            for h in 0..rot {
                let base = (t * heads + h) * dim;
                for i in 0..dim / 2 {
                    let (x1, x2) = (before[base + i], before[base + i + dim / 2]);
                    let (c, s) = (c[t * dim / 2 + i], s[t * dim / 2 + i]);
                    want[base + i] = x1 * c - x2 * s;
                    want[base + i + dim / 2] = x2 * c + x1 * s;
                }
            }
        }
        assert_close(&to_vec(&xt), &want, dtype, "rotary");
    }
}

#[test]
fn rotary_matches_candle_rope_thd() {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(4));
    let (tokens, heads, dim) = (3, 2, 8);
    let x = Tensor::from_vec(random(&mut rng, tokens * heads * dim), (tokens, heads, dim), &dev).unwrap();
    let angles = Tensor::from_vec(random(&mut rng, tokens * dim / 2), (tokens, dim / 2), &dev).unwrap();
    let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
    let want = candle_core::Tensor::cat(
        &[
            (x.narrow(2, 0, dim / 2).unwrap().broadcast_mul(&cos.unsqueeze(1).unwrap()).unwrap()
                - x.narrow(2, dim / 2, dim / 2).unwrap().broadcast_mul(&sin.unsqueeze(1).unwrap()).unwrap())
            .unwrap(),
            (x.narrow(2, dim / 2, dim / 2).unwrap().broadcast_mul(&cos.unsqueeze(1).unwrap()).unwrap()
                + x.narrow(2, 0, dim / 2).unwrap().broadcast_mul(&sin.unsqueeze(1).unwrap()).unwrap())
            .unwrap(),
        ],
        2,
    )
    .unwrap();
    let got = x.copy().unwrap();
    rotary_in_place(&got, &cos, &sin, heads).unwrap();
    assert_close(&to_vec(&got), &to_vec(&want), DType::F32, "rope");
}

#[test]
fn silu_and_mul_matches_the_formula() {
    let (dev, mut rng) = (Device::Cpu, StdRng::seed_from_u64(5));
    let (rows, n) = (6, 40);
    let x = random(&mut rng, rows * 2 * n);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let xt = Tensor::from_slice(&x, (rows, 2 * n), &dev).unwrap().to_dtype(dtype).unwrap();
        let xr = to_vec(&xt);
        let want: Vec<f32> = (0..rows * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                let (g, u) = (xr[r * 2 * n + j], xr[r * 2 * n + n + j]);
                g / (1.0 + (-g).exp()) * u
            })
            .collect();
        assert_close(&to_vec(&silu_and_mul(&xt).unwrap()), &want, dtype, "silu_and_mul");
    }
}

#[test]
fn fused_ops_reject_bad_shapes() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
    assert!(rms_norm(&x, &Tensor::zeros(7, DType::F32, &dev).unwrap(), 1e-5).is_err());
    assert!(silu_and_mul(&Tensor::zeros((2, 7), DType::F32, &dev).unwrap()).is_err());
    let q = Tensor::zeros((2, 3, 8), DType::F32, &dev).unwrap();
    let table = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    assert!(rotary_in_place(&q, &table, &table, 4).is_err());
}
