//! CUDA launches of the fused ops in `kernels/fused.cu`.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::CudaStorage;
use candle_core::{Error, Layout, Result};

use crate::cuda::{alloc, dims_u32, dispatch_float, func, grid, row_threads, view, view_mut, KernelType};

type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// RMSNorm of `rows` rows of `dim`; with `residual`, returns `[2, rows, dim]` (sum, normed).
pub(crate) fn rms_norm(
    x: Operand,
    residual: Option<Operand>,
    w: Operand,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<CudaStorage> {
    if x.0.dtype() != w.0.dtype() || residual.is_some_and(|r| r.0.dtype() != x.0.dtype()) {
        candle_core::bail!("rms_norm: inputs must share a dtype");
    }
    dispatch_float!(x.0.dtype(), "rms_norm", launch_norm(x, residual, w, rows, dim, eps))
}

fn launch_norm<T: KernelType>(
    x: Operand,
    residual: Option<Operand>,
    w: Operand,
    rows: usize,
    dim: usize,
    eps: f32,
) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, wv) = (view::<T>(x.0, x.1, "rms_norm")?, view::<T>(w.0, w.1, "rms_norm")?);
    let (rows32, dim32) = (dims_u32(rows, "rows")?, dims_u32(dim, "dim")?);
    let cfg = grid((rows32.max(1), 1, 1), row_threads(dim).min(1024));
    let mut out;
    match residual {
        None => {
            out = alloc::<T>(dev, rows * dim)?;
            let f = func::<T>(dev, "fused", "rms_norm")?;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out).arg(&xv).arg(&wv).arg(&dim32).arg(&eps);
            // SAFETY: matches rms_norm_* in kernels/fused.cu; one block per row.
            unsafe { b.launch(cfg) }.map_err(Error::wrap)?;
        }
        Some(r) => {
            out = alloc::<T>(dev, 2 * rows * dim)?;
            let rv = view::<T>(r.0, r.1, "add_rms_norm")?;
            let f = func::<T>(dev, "fused", "add_rms_norm")?;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out).arg(&xv).arg(&rv).arg(&wv).arg(&rows32).arg(&dim32).arg(&eps);
            // SAFETY: matches add_rms_norm_* in kernels/fused.cu; one block per row.
            unsafe { b.launch(cfg) }.map_err(Error::wrap)?;
        }
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

pub(crate) fn silu_and_mul(x: Operand, rows: usize, n: usize) -> Result<CudaStorage> {
    dispatch_float!(x.0.dtype(), "silu_and_mul", launch_silu(x, rows, n))
}

fn launch_silu<T: KernelType>(x: Operand, rows: usize, n: usize) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = view::<T>(x.0, x.1, "silu_and_mul")?;
    let mut out = alloc::<T>(dev, rows * n)?;
    let n32 = dims_u32(n, "width")?;
    let f = func::<T>(dev, "fused", "silu_and_mul")?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut out).arg(&xv).arg(&n32);
    // SAFETY: matches silu_and_mul_* in kernels/fused.cu; one block per row.
    unsafe { b.launch(grid((dims_u32(rows, "rows")?.max(1), 1, 1), row_threads(n).min(1024))) }.map_err(Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

pub(crate) fn rotary(
    x: &mut CudaStorage,
    xl: &Layout,
    cos: Operand,
    sin: Operand,
    heads: usize,
    rot_heads: usize,
    dim: usize,
) -> Result<()> {
    if x.dtype() != cos.0.dtype() || x.dtype() != sin.0.dtype() {
        candle_core::bail!("rotary: x and tables must share a dtype");
    }
    let dtype = x.dtype();
    dispatch_float!(dtype, "rotary", launch_rotary(x, xl, cos, sin, heads, rot_heads, dim))
}

fn launch_rotary<T: KernelType>(
    x: &mut CudaStorage,
    xl: &Layout,
    cos: Operand,
    sin: Operand,
    heads: usize,
    rot_heads: usize,
    dim: usize,
) -> Result<()> {
    let tokens = xl.shape().dims3()?.0;
    if tokens == 0 || rot_heads == 0 {
        return Ok(());
    }
    let dev = x.device.clone();
    let (cv, sv) = (view::<T>(cos.0, cos.1, "rotary")?, view::<T>(sin.0, sin.1, "rotary")?);
    let mut xv = view_mut::<T>(x, xl, "rotary")?;
    let (h, r, d) = (dims_u32(heads, "heads")?, dims_u32(rot_heads, "rot_heads")?, dims_u32(dim, "head_dim")?);
    let f = func::<T>(&dev, "fused", "rotary")?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut xv).arg(&cv).arg(&sv).arg(&h).arg(&r).arg(&d);
    let cfg = grid((dims_u32(tokens, "tokens")?, 1, 1), row_threads(rot_heads * dim / 2).min(512));
    // SAFETY: matches rotary_* in kernels/fused.cu; one block per token.
    unsafe { b.launch(cfg) }.map_err(Error::wrap)?;
    Ok(())
}
