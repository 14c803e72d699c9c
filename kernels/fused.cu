// Fused elementwise kernels: RMSNorm (plain and with the residual add), rotary embedding in place
// (non-interleaved "rotate half"), and SiLU-and-mul. All math in f32.
#include "common.cuh"

// out = x / rms(x) * w, one block per row of `dim`.
template <typename T>
__device__ void rms_norm(T* out, const T* __restrict__ x, const T* __restrict__ w, uint32_t dim, float eps) {
  const size_t row = (size_t)blockIdx.x * dim;
  float sq = 0.f;
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) { const float v = to_f32(x[row + i]); sq += v * v; }
  const float inv = rsqrtf(block_sum(sq) / dim + eps);
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x)
    out[row + i] = from_f32<T>(to_f32(x[row + i]) * inv * to_f32(w[i]));
}

// sum = x + residual (rounded to T), normed = rms_norm(sum) * w. out holds [2, rows, dim]: sum, normed.
template <typename T>
__device__ void add_rms_norm(T* out, const T* __restrict__ x, const T* __restrict__ r, const T* __restrict__ w,
                             uint32_t rows, uint32_t dim, float eps) {
  const size_t row = (size_t)blockIdx.x * dim;
  T* sum = out + row;
  T* normed = out + (size_t)rows * dim + row;
  float sq = 0.f;
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const T s = from_f32<T>(to_f32(x[row + i]) + to_f32(r[row + i]));
    sum[i] = s;
    const float v = to_f32(s);
    sq += v * v;
  }
  const float inv = rsqrtf(block_sum(sq) / dim + eps);
  for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) normed[i] = from_f32<T>(to_f32(sum[i]) * inv * to_f32(w[i]));
}

// x: [tokens, heads, head_dim], rotates heads 0..rot_heads in place; cos/sin: [tokens, head_dim / 2].
template <typename T>
__device__ void rotary(T* x, const T* __restrict__ cos, const T* __restrict__ sin, uint32_t heads, uint32_t rot_heads,
                       uint32_t head_dim) {
  const uint32_t token = blockIdx.x, half = head_dim / 2;
  for (uint32_t idx = threadIdx.x; idx < rot_heads * half; idx += blockDim.x) {
    const uint32_t h = idx / half, i = idx % half;
    T* base = x + ((size_t)token * heads + h) * head_dim;
    const float c = to_f32(cos[(size_t)token * half + i]), s = to_f32(sin[(size_t)token * half + i]);
    const float x1 = to_f32(base[i]), x2 = to_f32(base[i + half]);
    base[i] = from_f32<T>(x1 * c - x2 * s);
    base[i + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

// x: [rows, 2n] (gate | up) -> out: [rows, n] = silu(gate) * up.
template <typename T>
__device__ void silu_and_mul(T* out, const T* __restrict__ x, uint32_t n) {
  const size_t row = blockIdx.x;
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float g = to_f32(x[row * 2 * n + i]), u = to_f32(x[row * 2 * n + n + i]);
    out[row * n + i] = from_f32<T>(g / (1.f + __expf(-g)) * u);
  }
}

#define SCONCE_FUSED(T, NAME)                                                                                  \
  extern "C" __global__ void rms_norm_##NAME(T* out, const T* x, const T* w, uint32_t dim, float eps) {        \
    rms_norm<T>(out, x, w, dim, eps);                                                                          \
  }                                                                                                            \
  extern "C" __global__ void add_rms_norm_##NAME(T* out, const T* x, const T* r, const T* w, uint32_t rows,    \
                                                 uint32_t dim, float eps) {                                    \
    add_rms_norm<T>(out, x, r, w, rows, dim, eps);                                                             \
  }                                                                                                            \
  extern "C" __global__ void rotary_##NAME(T* x, const T* cos, const T* sin, uint32_t heads, uint32_t rot_heads, \
                                           uint32_t head_dim) {                                                \
    rotary<T>(x, cos, sin, heads, rot_heads, head_dim);                                                        \
  }                                                                                                            \
  extern "C" __global__ void silu_and_mul_##NAME(T* out, const T* x, uint32_t n) { silu_and_mul<T>(out, x, n); }
SCONCE_FOR_TYPES(SCONCE_FUSED)
