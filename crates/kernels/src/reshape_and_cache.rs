//! Writes new tokens' K or V rows into the paged cache at their slots.

use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};

use crate::element::contiguous;

/// On CUDA, slots outside the cache are skipped rather than reported.
///
/// In place on `cache` (`[num_blocks, block_size, num_kv_heads, head_dim]`): row `i` of `new`
/// (`[num_tokens, num_kv_heads, head_dim]`) goes to slot `slot_mapping[i]` (u32 `[num_tokens]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReshapeAndCache;

/// Writes `new` into `cache` at `slot_mapping`; see [`ReshapeAndCache`].
pub fn reshape_and_cache(cache: &Tensor, new: &Tensor, slot_mapping: &Tensor) -> Result<()> {
    cache.inplace_op3(new, slot_mapping, &ReshapeAndCache)
}

fn scatter_rows<T: Copy>(cache: &mut [T], new: &[T], slots: &[u32], row: usize) -> Result<()> {
    let num_slots = cache.len() / row;
    for (i, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        if slot >= num_slots {
            candle_core::bail!("reshape_and_cache: slot {slot} is outside the cache ({num_slots} slots)");
        }
        cache[slot * row..(slot + 1) * row].copy_from_slice(&new[i * row..(i + 1) * row]);
    }
    Ok(())
}

impl InplaceOp3 for ReshapeAndCache {
    fn name(&self) -> &'static str {
        "reshape-and-cache"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cl: &Layout,
        new: &CpuStorage,
        nl: &Layout,
        slots: &CpuStorage,
        sl: &Layout,
    ) -> Result<()> {
        let name = self.name();
        check_shapes(cl, nl, sl, name)?;
        let (_, _, kv_heads, head_dim) = cl.shape().dims4()?;
        let CpuStorage::U32(slots) = slots else {
            candle_core::bail!("{name}: slot_mapping must be u32");
        };
        let slots = contiguous(slots, sl, name)?;
        let Some((start, end)) = cl.contiguous_offsets() else {
            candle_core::bail!("{name}: cache must be contiguous");
        };
        let row = kv_heads * head_dim;
        match (cache, new) {
            (CpuStorage::F32(c), CpuStorage::F32(n)) => {
                scatter_rows(&mut c[start..end], contiguous(n, nl, name)?, slots, row)
            }
            (CpuStorage::F16(c), CpuStorage::F16(n)) => {
                scatter_rows(&mut c[start..end], contiguous(n, nl, name)?, slots, row)
            }
            (CpuStorage::BF16(c), CpuStorage::BF16(n)) => {
                scatter_rows(&mut c[start..end], contiguous(n, nl, name)?, slots, row)
            }
            _ => candle_core::bail!("{name}: cache and new rows must share a float dtype"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::CudaStorage,
        cl: &Layout,
        new: &candle_core::CudaStorage,
        nl: &Layout,
        slots: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<()> {
        check_shapes(cl, nl, sl, self.name())?;
        crate::cuda_attention::reshape_and_cache(cache, cl, (new, nl), (slots, sl))
    }
}

/// Checks that `new` rows fit the cache and that there is one slot per token.
fn check_shapes(cl: &Layout, nl: &Layout, sl: &Layout, name: &str) -> Result<()> {
    let (_, _, kv_heads, head_dim) = cl.shape().dims4()?;
    let (tokens, new_heads, new_dim) = nl.shape().dims3()?;
    if (new_heads, new_dim) != (kv_heads, head_dim) {
        candle_core::bail!("{name}: new rows {:?} do not fit cache {:?}", nl.shape(), cl.shape());
    }
    if sl.shape().elem_count() != tokens {
        candle_core::bail!("{name}: {} slots for {tokens} tokens", sl.shape().elem_count());
    }
    Ok(())
}
