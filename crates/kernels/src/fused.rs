//! Fused elementwise ops: RMSNorm (plain and with the residual add), rotary embedding in place,
//! and SiLU-and-mul. The CPU versions are the references for the CUDA kernels in `kernels/fused.cu`.

use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::WithDType;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp3, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use crate::element::{contiguous, Element};

/// `x / rms(x) * w` over the last dimension; `w` is `[dim]`.
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    pub eps: f32,
}

/// `(x + residual, rms_norm(x + residual) * w)`, returned as one `[2, ...x.shape]` tensor.
#[derive(Debug, Clone, Copy)]
pub struct AddRmsNorm {
    pub eps: f32,
}

/// Rotates heads `0..rot_heads` of `x` (`[tokens, heads, head_dim]`) in place ("rotate half", as HF);
/// `cos`, `sin`: `[tokens, head_dim / 2]`.
#[derive(Debug, Clone, Copy)]
pub struct RotaryInPlace {
    pub rot_heads: usize,
}

/// `[rows, 2n]` (gate | up) to `[rows, n]` = `silu(gate) * up`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiluAndMul;

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op2_no_bwd(w, &RmsNorm { eps })
}

/// Returns `(x + residual, rms_norm(x + residual) * w)`.
pub fn add_rms_norm(x: &Tensor, residual: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let both = x.apply_op3_no_bwd(residual, w, &AddRmsNorm { eps })?;
    Ok((both.get(0)?, both.get(1)?))
}

/// Applies rotary embedding in place to the first `rot_heads` heads of contiguous `x`.
pub fn rotary_in_place(x: &Tensor, cos: &Tensor, sin: &Tensor, rot_heads: usize) -> Result<()> {
    x.inplace_op3(cos, sin, &RotaryInPlace { rot_heads })
}

pub fn silu_and_mul(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&SiluAndMul)
}

/// `(rows, dim)` of a tensor normalized over its last dimension.
pub(crate) fn rows_dim(l: &Layout, w: &Layout, name: &str) -> Result<(usize, usize)> {
    let dim = l.shape().dims().last().copied().unwrap_or(0);
    if dim == 0 || w.shape().elem_count() != dim {
        candle_core::bail!("{name}: weight {:?} does not fit input {:?}", w.shape(), l.shape());
    }
    Ok((l.shape().elem_count() / dim, dim))
}

fn norm_row<T: Element>(x: &[f32], w: &[T], eps: f32, out: &mut [T]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = T::from_f32(v * inv * w.to_f32());
    }
}

fn rms_norm_cpu<T: Element>(x: &[T], w: &[T], dim: usize, eps: f32) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); x.len()];
    for (row, o) in x.chunks(dim).zip(out.chunks_mut(dim)) {
        let row: Vec<f32> = row.iter().map(|v| v.to_f32()).collect();
        norm_row(&row, w, eps, o);
    }
    out
}

fn add_rms_norm_cpu<T: Element>(x: &[T], r: &[T], w: &[T], dim: usize, eps: f32) -> Vec<T> {
    let sum: Vec<T> = x.iter().zip(r).map(|(a, b)| T::from_f32(a.to_f32() + b.to_f32())).collect();
    let normed = rms_norm_cpu(&sum, w, dim, eps);
    [sum, normed].concat()
}

fn rotary_cpu<T: Element>(x: &mut [T], cos: &[T], sin: &[T], heads: usize, rot_heads: usize, dim: usize) {
    let half = dim / 2;
    for (token, row) in x.chunks_mut(heads * dim).enumerate() {
        let (c, s) = (&cos[token * half..][..half], &sin[token * half..][..half]);
        for head in row.chunks_mut(dim).take(rot_heads) {
            for i in 0..half {
                let (x1, x2) = (head[i].to_f32(), head[i + half].to_f32());
                let (c, s) = (c[i].to_f32(), s[i].to_f32());
                head[i] = T::from_f32(x1 * c - x2 * s);
                head[i + half] = T::from_f32(x2 * c + x1 * s);
            }
        }
    }
}

fn silu_and_mul_cpu<T: Element>(x: &[T], n: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len() / 2);
    for row in x.chunks(2 * n) {
        out.extend(row[..n].iter().zip(&row[n..]).map(|(g, u)| {
            let g = g.to_f32();
            T::from_f32(g / (1.0 + (-g).exp()) * u.to_f32())
        }));
    }
    out
}

/// A CPU kernel generic over the element type; all inputs share one float dtype.
trait CpuKernel {
    fn run<T: Element + WithDType>(&self, inputs: &[&[T]]) -> Vec<T>;
}

fn slices<'a, T: WithDType>(inputs: &[(&'a CpuStorage, &Layout)], name: &str) -> Result<Vec<&'a [T]>> {
    inputs.iter().map(|(s, l)| contiguous(s.as_slice::<T>()?, l, name)).collect()
}

fn dispatch<K: CpuKernel>(k: &K, name: &str, inputs: &[(&CpuStorage, &Layout)]) -> Result<CpuStorage> {
    let dtype = inputs[0].0.dtype();
    if inputs.iter().any(|(s, _)| s.dtype() != dtype) {
        candle_core::bail!("{name}: inputs must share a dtype");
    }
    Ok(match dtype {
        DType::F32 => f32::to_cpu_storage_owned(k.run(&slices::<f32>(inputs, name)?)),
        DType::F16 => f16::to_cpu_storage_owned(k.run(&slices::<f16>(inputs, name)?)),
        DType::BF16 => bf16::to_cpu_storage_owned(k.run(&slices::<bf16>(inputs, name)?)),
        other => candle_core::bail!("{name}: unsupported dtype {other:?}"),
    })
}

struct NormKernel {
    dim: usize,
    eps: f32,
    add: bool,
}

impl CpuKernel for NormKernel {
    fn run<T: Element + WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        if self.add {
            add_rms_norm_cpu(i[0], i[1], i[2], self.dim, self.eps)
        } else {
            rms_norm_cpu(i[0], i[1], self.dim, self.eps)
        }
    }
}

struct SiluKernel(usize);

impl CpuKernel for SiluKernel {
    fn run<T: Element + WithDType>(&self, i: &[&[T]]) -> Vec<T> {
        silu_and_mul_cpu(i[0], self.0)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, dim) = rows_dim(xl, wl, self.name())?;
        let k = NormKernel { dim, eps: self.eps, add: false };
        Ok((dispatch(&k, self.name(), &[(x, xl), (w, wl)])?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (rows, dim) = rows_dim(xl, wl, self.name())?;
        let out = crate::cuda_fused::rms_norm((x, xl), None, (w, wl), rows, dim, self.eps)?;
        Ok((out, xl.shape().clone()))
    }
}

impl AddRmsNorm {
    fn out_shape(xl: &Layout) -> Shape {
        let mut dims = vec![2];
        dims.extend_from_slice(xl.shape().dims());
        Shape::from(dims)
    }
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, dim) = rows_dim(xl, wl, self.name())?;
        if xl.shape() != rl.shape() {
            candle_core::bail!("{}: x and residual differ in shape", self.name());
        }
        let k = NormKernel { dim, eps: self.eps, add: true };
        Ok((dispatch(&k, self.name(), &[(x, xl), (r, rl), (w, wl)])?, Self::out_shape(xl)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        r: &CudaStorage,
        rl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, dim) = rows_dim(xl, wl, self.name())?;
        if xl.shape() != rl.shape() {
            candle_core::bail!("{}: x and residual differ in shape", self.name());
        }
        let out = crate::cuda_fused::rms_norm((x, xl), Some((r, rl)), (w, wl), rows, dim, self.eps)?;
        Ok((out, Self::out_shape(xl)))
    }
}

impl CustomOp1 for SiluAndMul {
    fn name(&self) -> &'static str {
        "silu-and-mul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, n) = gate_up_dims(xl, self.name())?;
        Ok((dispatch(&SiluKernel(n), self.name(), &[(x, xl)])?, Shape::from((rows, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let (rows, n) = gate_up_dims(xl, self.name())?;
        Ok((crate::cuda_fused::silu_and_mul((x, xl), rows, n)?, Shape::from((rows, n))))
    }
}

fn gate_up_dims(xl: &Layout, name: &str) -> Result<(usize, usize)> {
    let (rows, width) = xl.shape().dims2()?;
    if width % 2 != 0 {
        candle_core::bail!("{name}: width {width} is odd");
    }
    Ok((rows, width / 2))
}

/// `(heads, head_dim)` of a rotary call, checked against the tables.
pub(crate) fn rotary_dims(xl: &Layout, cl: &Layout, sl: &Layout, rot_heads: usize) -> Result<(usize, usize)> {
    let (tokens, heads, dim) = xl.shape().dims3()?;
    let table = Shape::from((tokens, dim / 2));
    if dim % 2 != 0 || rot_heads > heads || cl.shape() != &table || sl.shape() != &table {
        candle_core::bail!("rotary: x {:?} does not fit tables {:?}", xl.shape(), cl.shape());
    }
    Ok((heads, dim))
}

fn rotary_typed<T: Element + WithDType>(
    x: &mut [T],
    tables: (&CpuStorage, &Layout, &CpuStorage, &Layout),
    heads: usize,
    rot_heads: usize,
    dim: usize,
) -> Result<()> {
    let (c, cl, s, sl) = tables;
    let cos = contiguous(c.as_slice::<T>()?, cl, "rotary")?;
    let sin = contiguous(s.as_slice::<T>()?, sl, "rotary")?;
    rotary_cpu(x, cos, sin, heads, rot_heads, dim);
    Ok(())
}

impl InplaceOp3 for RotaryInPlace {
    fn name(&self) -> &'static str {
        "rotary-in-place"
    }

    fn cpu_fwd(
        &self,
        x: &mut CpuStorage,
        xl: &Layout,
        c: &CpuStorage,
        cl: &Layout,
        s: &CpuStorage,
        sl: &Layout,
    ) -> Result<()> {
        let (heads, dim) = rotary_dims(xl, cl, sl, self.rot_heads)?;
        let Some((a, b)) = xl.contiguous_offsets() else { candle_core::bail!("rotary: x must be contiguous") };
        let t = (c, cl, s, sl);
        match x {
            CpuStorage::F32(x) => rotary_typed(&mut x[a..b], t, heads, self.rot_heads, dim),
            CpuStorage::F16(x) => rotary_typed(&mut x[a..b], t, heads, self.rot_heads, dim),
            CpuStorage::BF16(x) => rotary_typed(&mut x[a..b], t, heads, self.rot_heads, dim),
            _ => candle_core::bail!("rotary: unsupported dtype"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &mut CudaStorage,
        xl: &Layout,
        c: &CudaStorage,
        cl: &Layout,
        s: &CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        let (heads, dim) = rotary_dims(xl, cl, sl, self.rot_heads)?;
        crate::cuda_fused::rotary(x, xl, (c, cl), (s, sl), heads, self.rot_heads, dim)
    }
}
