//! CUDA forward passes of [`PagedAttention`] and [`ReshapeAndCache`].

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{Error, Layout, Result};

use crate::cuda::{alloc, dims_u32, dispatch_float, func, grid, row_threads, upload_meta, view, view_mut, view_u32};
use crate::cuda::{DeviceMeta, KernelType};
use crate::paged_attention::{heads_per_block, plan_splits, Dims, PagedAttention};

const WARPS: u32 = 4;

/// Mirrors `struct PagedArgs` in kernels/paged_attention.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PagedArgs {
    num_seqs: u32,
    num_heads: u32,
    num_kv_heads: u32,
    head_dim: u32,
    block_size: u32,
    max_blocks: u32,
    gpb: u32,
    partition: u32,
    num_splits: u32,
    scale: f32,
}

// SAFETY: plain #[repr(C)] scalars, laid out as the kernel's struct.
unsafe impl DeviceRepr for PagedArgs {}

type Operand<'a> = (&'a CudaStorage, &'a Layout);

impl PagedAttention {
    pub(crate) fn cuda_run(&self, q: Operand, k: Operand, v: Operand) -> Result<CudaStorage> {
        let d = self.dims(q.1, k.1, v.1)?;
        if d.num_tokens == 0 || d.head_dim > 256 || !d.head_dim.is_multiple_of(2) {
            candle_core::bail!("paged_attention (cuda): unsupported shape {d:?}");
        }
        let dev = &q.0.device;
        let owned;
        let meta: &DeviceMeta = match self.metadata.device_copy.get_or_init(|| upload_meta(dev, &self.metadata)) {
            Some(Ok(m)) if m.device == dev.id() => m,
            Some(Err(e)) => candle_core::bail!("paged_attention: metadata upload failed: {e}"),
            _ => {
                owned = upload_meta(dev, &self.metadata)?;
                &owned
            }
        };
        dispatch_float!(q.0.dtype(), "paged_attention", launch_attention(self, dev, meta, d, q, k, v))
    }
}

fn launch_attention<T: KernelType>(
    op: &PagedAttention,
    dev: &CudaDevice,
    meta: &DeviceMeta,
    d: Dims,
    q: Operand,
    k: Operand,
    v: Operand,
) -> Result<CudaStorage> {
    let name = "paged_attention";
    let (qv, kv, vv) = (view::<T>(q.0, q.1, name)?, view::<T>(k.0, k.1, name)?, view::<T>(v.0, v.1, name)?);
    let max_len = op.metadata.context_lens.iter().copied().max().unwrap_or(1) as usize;
    let gpb = heads_per_block(d.num_heads / d.num_kv_heads);
    let groups = d.num_heads / gpb;
    let (splits, partition) = plan_splits(d.num_tokens, groups, max_len);
    let args = PagedArgs {
        num_seqs: dims_u32(op.metadata.num_seqs(), "num_seqs")?,
        num_heads: dims_u32(d.num_heads, "num_heads")?,
        num_kv_heads: dims_u32(d.num_kv_heads, "num_kv_heads")?,
        head_dim: dims_u32(d.head_dim, "head_dim")?,
        block_size: dims_u32(op.metadata.block_size, "block_size")?,
        max_blocks: dims_u32(op.metadata.max_blocks_per_seq, "max_blocks_per_seq")?,
        gpb: gpb as u32,
        partition: dims_u32(partition, "partition")?,
        num_splits: splits as u32,
        scale: op.scale,
    };
    let rows = d.num_tokens * d.num_heads;
    let mut out = alloc::<T>(dev, rows * d.head_dim)?;
    let part = if splits > 1 { rows * splits } else { 0 };
    let mut part_acc = alloc::<f32>(dev, part * d.head_dim)?;
    let mut part_ml = alloc::<f32>(dev, part * 2)?;
    let f = func::<T>(dev, name, "paged_attention_split")?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut out).arg(&mut part_acc).arg(&mut part_ml).arg(&qv).arg(&kv).arg(&vv);
    b.arg(&meta.query_start_loc).arg(&meta.context_lens).arg(&meta.block_tables).arg(&args);
    let cfg = grid((dims_u32(d.num_tokens, "num_tokens")?, groups as u32, splits as u32), WARPS * 32);
    // SAFETY: argument order and types match paged_attention_split_* in kernels/paged_attention.cu.
    unsafe { b.launch(cfg) }.map_err(Error::wrap)?;
    if splits > 1 {
        let f = func::<T>(dev, name, "paged_attention_reduce")?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        let (heads, dim, s) = (args.num_heads, args.head_dim, args.num_splits);
        b.arg(&mut out).arg(&part_acc).arg(&part_ml).arg(&heads).arg(&dim).arg(&s);
        let cfg = grid((d.num_tokens as u32, args.num_heads, 1), row_threads(d.head_dim));
        // SAFETY: matches paged_attention_reduce_*; grid is (tokens, heads).
        unsafe { b.launch(cfg) }.map_err(Error::wrap)?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

/// Writes rows of `new` into `cache` at `slots` (u32); slots outside the cache are skipped.
pub(crate) fn reshape_and_cache(cache: &mut CudaStorage, cl: &Layout, new: Operand, slots: Operand) -> Result<()> {
    let dtype = cache.dtype();
    if new.0.dtype() != dtype || slots.0.dtype() != candle_core::DType::U32 {
        candle_core::bail!("reshape_and_cache: cache and rows must share a dtype; slot_mapping must be u32");
    }
    dispatch_float!(dtype, "reshape_and_cache", launch_cache(cache, cl, new, slots))
}

fn launch_cache<T: KernelType>(cache: &mut CudaStorage, cl: &Layout, new: Operand, slots: Operand) -> Result<()> {
    let name = "reshape_and_cache";
    let (_, _, kv_heads, head_dim) = cl.shape().dims4()?;
    let tokens = new.1.shape().dims3()?.0;
    if tokens == 0 {
        return Ok(());
    }
    let row = kv_heads * head_dim;
    let num_slots = dims_u32(cl.shape().elem_count() / row.max(1), "cache slots")?;
    let dev = cache.device.clone();
    let src = view::<T>(new.0, new.1, name)?;
    let slot_view = view_u32(slots.0, slots.1, name)?;
    let mut dst = view_mut::<T>(cache, cl, name)?;
    let f = func::<T>(&dev, name, name)?;
    let stream = dev.cuda_stream();
    let mut b = stream.launch_builder(&f);
    let row32 = dims_u32(row, "row")?;
    b.arg(&mut dst).arg(&src).arg(&slot_view).arg(&row32).arg(&num_slots);
    // SAFETY: matches reshape_and_cache_* in kernels/reshape_and_cache.cu; one block per token.
    unsafe { b.launch(grid((dims_u32(tokens, "tokens")?, 1, 1), row_threads(row).min(256))) }.map_err(Error::wrap)?;
    Ok(())
}
