//! Sconce's attention and KV-cache kernels as candle custom ops.
//!
//! Every op has a CPU implementation (`cpu_fwd`), which is also the reference that CUDA kernels are
//! checked against. The KV cache layout is `[num_blocks, block_size, num_kv_heads, head_dim]`, so a
//! slot id `block * block_size + offset` addresses one row of `num_kv_heads * head_dim` values.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
mod cuda_attention;
#[cfg(feature = "cuda")]
mod cuda_fused;
mod element;
mod fused;
mod linear;
mod linear_q8;
mod metadata;
mod paged_attention;
mod reshape_and_cache;

pub use fused::{
    add_rms_norm, rms_norm, rotary_in_place, silu_and_mul, AddRmsNorm, RmsNorm, RotaryInPlace, SiluAndMul,
};
pub use linear::{linear_f32_acc, HalfWeightLinear};
pub use linear_q8::{linear_q8, Q8Linear, Q8Matrix, Q8_BLOCK};
pub use metadata::{AttentionMetadata, DeviceCopy};
pub use paged_attention::{paged_attention, PagedAttention};
pub use reshape_and_cache::{reshape_and_cache, ReshapeAndCache};
