// Writes each new token's K and V rows into the paged cache at its slot.
// cache: [num_blocks, block_size, kv_heads, head_dim]; new: [num_tokens, kv_heads, head_dim].
#include "common.cuh"

// One block per token; threads stride over the row. Slots outside the cache are skipped (padding).
template <typename T>
__device__ void reshape_and_cache(T* __restrict__ cache, const T* __restrict__ src, const uint32_t* __restrict__ slots,
                                  uint32_t row, uint32_t num_slots) {
  const uint32_t token = blockIdx.x;
  const uint32_t slot = slots[token];
  if (slot >= num_slots) return;
  T* dst = cache + (size_t)slot * row;
  const T* from = src + (size_t)token * row;
  for (uint32_t i = threadIdx.x; i < row; i += blockDim.x) dst[i] = from[i];
}

#define SCONCE_RESHAPE(T, NAME)                                                                             \
  extern "C" __global__ void reshape_and_cache_##NAME(T* cache, const T* src, const uint32_t* slots,        \
                                                      uint32_t row, uint32_t num_slots) {                   \
    reshape_and_cache<T>(cache, src, slots, row, num_slots);                                                \
  }
SCONCE_FOR_TYPES(SCONCE_RESHAPE)
