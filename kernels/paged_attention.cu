// Varlen causal attention over a paged KV cache, split-K ("flash-decoding") with a reduce pass.
// Serves decode, prefill and chunked prefill: each query token attends to positions 0..=its own.
// Block (token, head group, split): 4 warps stream the split's positions; each lane owns head_dim/32
// dims, and a block handles `gpb` query heads that share one KV head, so K/V are read once per group.
#include "common.cuh"

#define PA_WARPS 4
#define PA_MAX_G 8
#define PA_MAX_DPL 8  // head_dim <= 256

// Metadata arrays: query_start_loc [num_seqs + 1], context_lens [num_seqs], block_tables [num_seqs, max_blocks].
struct PagedMeta {
  const uint32_t* query_start_loc;
  const uint32_t* context_lens;
  const uint32_t* block_tables;
};

// Scalars, passed by value (mirrored by a #[repr(C)] struct on the Rust side).
struct PagedArgs {
  uint32_t num_seqs, num_heads, num_kv_heads, head_dim, block_size, max_blocks, gpb, partition, num_splits;
  float scale;
};

// The sequence owning flattened token `token` (largest s with query_start_loc[s] <= token).
__device__ __forceinline__ uint32_t find_seq(const uint32_t* qsl, uint32_t num_seqs, uint32_t token) {
  uint32_t lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    uint32_t mid = (lo + hi + 1) / 2;
    if (qsl[mid] <= token) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Combines per-warp softmax states for `gpb` heads and writes either the final output (one split)
// or this split's normalized partial plus its (max, sum).
template <typename T>
__device__ void combine_warps(const PagedArgs& a, float (*sm_acc)[PA_MAX_G][PA_MAX_DPL * 32],
                              float (*sm_m)[PA_MAX_G], float (*sm_l)[PA_MAX_G], uint32_t token, uint32_t head0,
                              T* out, float* part_acc, float* part_ml) {
  for (uint32_t idx = threadIdx.x; idx < a.gpb * a.head_dim; idx += blockDim.x) {
    const uint32_t g = idx / a.head_dim, d = idx % a.head_dim;
    float m = -INFINITY;
    for (int w = 0; w < PA_WARPS; ++w) m = fmaxf(m, sm_m[w][g]);
    float l = 0.f, acc = 0.f;
    for (int w = 0; w < PA_WARPS; ++w) {
      const float f = sm_m[w][g] == -INFINITY ? 0.f : __expf(sm_m[w][g] - m);
      l += sm_l[w][g] * f;
      acc += sm_acc[w][g][d] * f;
    }
    const float o = l > 0.f ? acc / l : 0.f;
    const size_t th = (size_t)token * a.num_heads + head0 + g;
    if (a.num_splits == 1) {
      out[th * a.head_dim + d] = from_f32<T>(o);
    } else {
      const size_t ps = th * a.num_splits + blockIdx.z;
      part_acc[ps * a.head_dim + d] = o;
      if (d == 0) { part_ml[ps * 2] = m; part_ml[ps * 2 + 1] = l; }
    }
  }
}

template <typename T>
__device__ void paged_attention_split(T* out, float* part_acc, float* part_ml, const T* __restrict__ q,
                                      const T* __restrict__ kc, const T* __restrict__ vc, PagedMeta mt,
                                      PagedArgs a) {
  __shared__ float sm_acc[PA_WARPS][PA_MAX_G][PA_MAX_DPL * 32];
  __shared__ float sm_m[PA_WARPS][PA_MAX_G], sm_l[PA_WARPS][PA_MAX_G];
  const uint32_t token = blockIdx.x, head0 = blockIdx.y * a.gpb, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint32_t seq = find_seq(mt.query_start_loc, a.num_seqs, token);
  const uint32_t q_start = mt.query_start_loc[seq], q_len = mt.query_start_loc[seq + 1] - q_start;
  const uint32_t len = mt.context_lens[seq] - q_len + (token - q_start) + 1;
  const uint32_t start = blockIdx.z * a.partition, end = min(start + a.partition, len);
  const uint32_t kv_head = head0 / (a.num_heads / a.num_kv_heads);
  const uint32_t* table = mt.block_tables + (size_t)seq * a.max_blocks;
  float qr[PA_MAX_G][PA_MAX_DPL], acc[PA_MAX_G][PA_MAX_DPL], m[PA_MAX_G], l[PA_MAX_G];
#pragma unroll
  for (int g = 0; g < PA_MAX_G; ++g) {
    m[g] = -INFINITY; l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < PA_MAX_DPL; ++i) {
      const uint32_t d = lane + 32 * i;
      const bool ok = g < a.gpb && d < a.head_dim;
      qr[g][i] = ok ? to_f32(q[((size_t)token * a.num_heads + head0 + g) * a.head_dim + d]) * a.scale : 0.f;
      acc[g][i] = 0.f;
    }
  }
  for (uint32_t pos = start + warp; pos < end; pos += PA_WARPS) {
    const size_t slot = (size_t)table[pos / a.block_size] * a.block_size + pos % a.block_size;
    const size_t off = (slot * a.num_kv_heads + kv_head) * a.head_dim;
    float k[PA_MAX_DPL], v[PA_MAX_DPL];
#pragma unroll
    for (int i = 0; i < PA_MAX_DPL; ++i) {
      const uint32_t d = lane + 32 * i;
      k[i] = d < a.head_dim ? to_f32(kc[off + d]) : 0.f;
      v[i] = d < a.head_dim ? to_f32(vc[off + d]) : 0.f;
    }
#pragma unroll
    for (int g = 0; g < PA_MAX_G; ++g) {
      if (g >= a.gpb) break;
      float s = 0.f;
#pragma unroll
      for (int i = 0; i < PA_MAX_DPL; ++i) s += qr[g][i] * k[i];
      s = warp_sum(s);
      const float nm = fmaxf(m[g], s), c = __expf(m[g] - nm), w = __expf(s - nm);
      l[g] = l[g] * c + w;
#pragma unroll
      for (int i = 0; i < PA_MAX_DPL; ++i) acc[g][i] = acc[g][i] * c + w * v[i];
      m[g] = nm;
    }
  }
#pragma unroll
  for (int g = 0; g < PA_MAX_G; ++g) {
#pragma unroll
    for (int i = 0; i < PA_MAX_DPL; ++i) sm_acc[warp][g][lane + 32 * i] = acc[g][i];
    if (lane == 0) { sm_m[warp][g] = m[g]; sm_l[warp][g] = l[g]; }
  }
  __syncthreads();
  combine_warps<T>(a, sm_acc, sm_m, sm_l, token, head0, out, part_acc, part_ml);
}

// Merges the splits of one (token, head): weights each partial by its sum and max.
template <typename T>
__device__ void paged_attention_reduce(T* out, const float* part_acc, const float* part_ml, uint32_t num_heads,
                                       uint32_t head_dim, uint32_t num_splits) {
  const size_t th = (size_t)blockIdx.x * num_heads + blockIdx.y;
  const float* ml = part_ml + th * num_splits * 2;
  float m = -INFINITY;
  for (uint32_t s = 0; s < num_splits; ++s) if (ml[2 * s + 1] > 0.f) m = fmaxf(m, ml[2 * s]);
  for (uint32_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float total = 0.f, acc = 0.f;
    for (uint32_t s = 0; s < num_splits; ++s) {
      const float l = ml[2 * s + 1];
      if (l <= 0.f) continue;
      const float w = l * __expf(ml[2 * s] - m);
      total += w;
      acc += w * part_acc[(th * num_splits + s) * head_dim + d];
    }
    out[th * head_dim + d] = from_f32<T>(total > 0.f ? acc / total : 0.f);
  }
}

#define SCONCE_PAGED(T, NAME)                                                                                 \
  extern "C" __global__ void __launch_bounds__(PA_WARPS * 32)                                                 \
      paged_attention_split_##NAME(T* out, float* part_acc, float* part_ml, const T* q, const T* kc,          \
                                   const T* vc, const uint32_t* qsl, const uint32_t* ctx, const uint32_t* bt, \
                                   PagedArgs a) {                                                             \
    paged_attention_split<T>(out, part_acc, part_ml, q, kc, vc, PagedMeta{qsl, ctx, bt}, a);                  \
  }                                                                                                           \
  extern "C" __global__ void paged_attention_reduce_##NAME(T* out, const float* part_acc, const float* part_ml, \
                                                           uint32_t num_heads, uint32_t head_dim,             \
                                                           uint32_t num_splits) {                             \
    paged_attention_reduce<T>(out, part_acc, part_ml, num_heads, head_dim, num_splits);                      \
  }
SCONCE_FOR_TYPES(SCONCE_PAGED)
