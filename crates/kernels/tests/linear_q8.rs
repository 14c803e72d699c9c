//! The Q8_0 linear against a naive matmul of its own dequantized weights.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sconce_kernels::{linear_q8, Q8Matrix, Q8_BLOCK};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn matrix(rng: &mut StdRng, rows: usize, cols: usize) -> (Vec<f32>, Arc<Q8Matrix>) {
    let w = random(rng, rows * cols);
    let q = Q8Matrix::quantize(&Tensor::from_slice(&w, (rows, cols), &Device::Cpu).unwrap()).unwrap();
    (w, Arc::new(q))
}

#[test]
fn quantization_error_is_within_half_a_step_of_each_block() {
    let mut rng = StdRng::seed_from_u64(1);
    let (w, q) = matrix(&mut rng, 7, 4 * Q8_BLOCK);
    let back = q.dequantize();
    for (block, (orig, deq)) in w.chunks(Q8_BLOCK).zip(back.chunks(Q8_BLOCK)).enumerate() {
        let step = orig.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in orig.iter().zip(deq) {
            assert!((a - b).abs() <= step * 0.5 + 1e-7, "block {block}: {a} vs {b}");
        }
    }
    assert_eq!(q.size_in_bytes(), 7 * 4 * Q8_BLOCK + 7 * 4 * 4);
}

#[test]
fn q8_linear_matches_a_naive_matmul_of_the_dequantized_weights() {
    let mut rng = StdRng::seed_from_u64(2);
    for (tokens, rows, cols) in [(1, 33, 64), (5, 17, 32), (9, 48, 96), (70, 37, 64)] {
        let (_, q) = matrix(&mut rng, rows, cols);
        let w = q.dequantize();
        let x = random(&mut rng, tokens * cols);
        let xt = Tensor::from_slice(&x, (tokens, cols), &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = linear_q8(&xt, &q).unwrap().to_vec2().unwrap();
        for (t, row) in got.iter().enumerate() {
            for (o, g) in row.iter().enumerate() {
                let expected: f32 = (0..cols).map(|i| x[t * cols + i] * w[o * cols + i]).sum();
                assert!((g - expected).abs() < 1e-4 * (1.0 + expected.abs()), "[{t},{o}]: {g} vs {expected}");
            }
        }
    }
}

#[test]
fn q8_linear_gives_each_token_the_same_bits_alone_or_in_a_batch() {
    let mut rng = StdRng::seed_from_u64(3);
    let (tokens, rows, cols) = (70, 37, 64);
    let (_, q) = matrix(&mut rng, rows, cols);
    let xt = Tensor::from_slice(&random(&mut rng, tokens * cols), (tokens, cols), &Device::Cpu).unwrap();
    let batch: Vec<Vec<f32>> = linear_q8(&xt, &q).unwrap().to_vec2().unwrap();
    for (t, row) in batch.iter().enumerate() {
        let alone: Vec<Vec<f32>> = linear_q8(&xt.narrow(0, t, 1).unwrap(), &q).unwrap().to_vec2().unwrap();
        assert_eq!(row, &alone[0], "token {t}");
    }
}

#[test]
fn rows_that_do_not_fill_whole_blocks_and_mismatched_inputs_are_errors() {
    let odd = Tensor::zeros((4, 40), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(Q8Matrix::quantize(&odd).is_err());
    let mut rng = StdRng::seed_from_u64(4);
    let (_, q) = matrix(&mut rng, 4, 64);
    let x = Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(linear_q8(&x, &q).is_err());
}
