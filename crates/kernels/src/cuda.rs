//! CUDA launches for `kernels/*.cu`, loaded from the PTX that build.rs embeds.

use std::sync::OnceLock;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId};
use candle_core::{Error, Layout, Result};
use half::{bf16, f16};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx_table.rs"));
}

/// Element types with kernel instantiations; `SUFFIX` names the `extern "C"` entry point.
pub(crate) trait KernelType: CudaDType + DeviceRepr + Copy + 'static {
    const SUFFIX: &'static str;
}

impl KernelType for f32 {
    const SUFFIX: &'static str = "f32";
}
impl KernelType for f16 {
    const SUFFIX: &'static str = "f16";
}
impl KernelType for bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Calls `$f::<T>(args)` for the float dtype `$dtype`.
macro_rules! dispatch_float {
    ($dtype:expr, $name:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            candle_core::DType::F32 => $f::<f32>($($arg),*),
            candle_core::DType::F16 => $f::<half::f16>($($arg),*),
            candle_core::DType::BF16 => $f::<half::bf16>($($arg),*),
            other => candle_core::bail!("{}: unsupported dtype {other:?}", $name),
        }
    };
}
pub(crate) use dispatch_float;

/// The highest PTX architecture this process's GPU accepted.
static ARCH: OnceLock<u32> = OnceLock::new();

/// Loads `{name}_{suffix}` from the module built from `kernels/{module}.cu`, trying the newest PTX
/// first and falling back when the driver rejects it.
pub(crate) fn func<T: KernelType>(dev: &CudaDevice, module: &str, name: &str) -> Result<CudaFunction> {
    let entry = format!("{name}_{}", T::SUFFIX);
    let mut last = None;
    for &(m, arch, src) in ptx::PTX.iter().rev() {
        if m != module || ARCH.get().is_some_and(|&a| arch > a) {
            continue;
        }
        match dev.get_or_load_custom_func(&entry, &format!("sconce_{module}_{arch}"), src) {
            Ok(f) => {
                let _ = ARCH.set(arch);
                return Ok(f.into_cuda_function());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Msg(format!("no PTX for kernel module {module}"))))
}

fn offsets(l: &Layout, op: &str) -> Result<(usize, usize)> {
    l.contiguous_offsets().ok_or_else(|| Error::Msg(format!("{op}: input must be contiguous")))
}

/// The contiguous device view a layout describes.
pub(crate) fn view<'a, T: KernelType>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    let (a, b) = offsets(l, op)?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

pub(crate) fn view_u32<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, u32>> {
    let (a, b) = offsets(l, op)?;
    Ok(s.as_cuda_slice::<u32>()?.slice(a..b))
}

pub(crate) fn view_mut<'a, T: KernelType>(s: &'a mut CudaStorage, l: &Layout, op: &str) -> Result<CudaViewMut<'a, T>> {
    let (a, b) = offsets(l, op)?;
    Ok(s.as_cuda_slice_mut::<T>()?.slice_mut(a..b))
}

/// An uninitialized device buffer of `len` elements (at least one).
pub(crate) fn alloc<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every kernel that receives this buffer writes each element it later reads.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

pub(crate) fn grid(blocks: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: blocks, block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Threads per block for a row of `n` elements: a multiple of 32, at most 1024.
pub(crate) fn row_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

pub(crate) fn dims_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Msg(format!("{what} ({v}) does not fit in u32")))
}

/// Attention metadata uploaded once per step and cached in [`crate::AttentionMetadata::device_copy`].
pub(crate) struct DeviceMeta {
    pub device: DeviceId,
    pub query_start_loc: CudaSlice<u32>,
    pub context_lens: CudaSlice<u32>,
    pub block_tables: CudaSlice<u32>,
}

pub(crate) fn upload_meta(dev: &CudaDevice, m: &crate::AttentionMetadata) -> Result<DeviceMeta> {
    let up = |v: &[u32]| if v.is_empty() { dev.clone_htod(&[0u32][..]) } else { dev.clone_htod(v) };
    Ok(DeviceMeta {
        device: dev.id(),
        query_start_loc: up(&m.query_start_loc)?,
        context_lens: up(&m.context_lens)?,
        block_tables: up(&m.block_tables)?,
    })
}
