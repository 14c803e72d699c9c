//! Effective weight bandwidth of `linear_f32_acc`: `cargo run --release -p sconce-kernels --example linear_speed`.
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (out, inp) in [(49152usize, 576usize), (3072, 576), (576, 1536)] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = Tensor::randn(0f32, 1.0, (out, inp), &dev)?.to_dtype(dtype)?;
            for tokens in [1usize, 16, 128] {
                let x = Tensor::randn(0f32, 1.0, (tokens, inp), &dev)?;
                sconce_kernels::linear_f32_acc(&x, &w)?;
                let reps = if tokens == 1 { 50 } else { 5 };
                let t = Instant::now();
                for _ in 0..reps {
                    sconce_kernels::linear_f32_acc(&x, &w)?;
                }
                let secs = t.elapsed().as_secs_f64() / reps as f64;
                let gbs = (out * inp * dtype.size_in_bytes()) as f64 / secs / 1e9;
                let gflops = 2.0 * (out * inp * tokens) as f64 / secs / 1e9;
                let gemm = x.matmul(&w.to_dtype(DType::F32)?.t()?)?;
                let t = Instant::now();
                for _ in 0..reps {
                    let _ = x.matmul(&w.to_dtype(DType::F32)?.t()?)?;
                }
                let _ = gemm;
                let g = t.elapsed().as_secs_f64() / reps as f64;
                println!("{out}x{inp} {dtype:?} T={tokens}: {:.3} ms, {gbs:.1} GB/s, {gflops:.1} GFLOP/s (candle f32 matmul incl. cast {:.3} ms)", secs * 1e3, g * 1e3);
            }
        }
    }
    Ok(())
}
