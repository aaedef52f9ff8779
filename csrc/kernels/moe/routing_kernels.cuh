// Device code of the Nvfp4MoE routing and combine kernels (launchers: routing.cu). A header so that
// csrc/tests/test_moe_emulated.cpp can run the same source on the CPU (simt_emulator.h).
#pragma once

#include <climits>
#include <cstdint>

#include "moe_internal.h"
#include "qwen35_trt/common/scalar_math.h"

namespace qwen35_trt::kernels::moe_detail::routing {

constexpr int kRouteWarps = 4;
constexpr int kCombineThreads = 128;

__device__ __forceinline__ float load_logit(const void* logits, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(logits)[i])
              : static_cast<const float*>(logits)[i];
}

// Is (v, i) a better pick than (bv, bi)? Larger logit first, lower index on ties; INT_MAX = none.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return i != INT_MAX && (bi == INT_MAX || v > bv || (v == bv && i < bi));
}

// One warp per token. Lane l considers experts l, l + 32, ...; `taken` marks its own picks.
__global__ void __launch_bounds__(kRouteWarps * 32)
    route_kernel(const void* logits, bool bf16, int32_t tokens, int32_t experts, int32_t top_k,
                 int32_t* ids, float* weights, int32_t* counts) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + (threadIdx.x >> 5);
  if (t >= tokens) return;
  const int64_t base = t * experts;
  uint32_t taken = 0;
  int my_id = 0;
  float my_v = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float bv = 0.0f;
    int bi = INT_MAX;
    for (int i = 0, e = lane; e < experts; ++i, e += 32) {
      if (taken & (1u << i)) continue;
      const float v = load_logit(logits, bf16, base + e);
      if (v == v && better(v, e, bv, bi)) {  // NaN logits are never picked
        bv = v;
        bi = e;
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_xor_sync(0xFFFFFFFFu, bv, off);
      const int oi = __shfl_xor_sync(0xFFFFFFFFu, bi, off);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (bi == INT_MAX) bi = 0;  // only NaN logits left: the host-side check rejects those
    if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    if (lane == j) {
      my_id = bi;
      my_v = bv;
    }
  }
  // w_j = exp(l_j - l_0) / sum_j' exp(l_j' - l_0), the sum in rank order (as the reference).
  const float top = __shfl_sync(0xFFFFFFFFu, my_v, 0);
  const float ex = lane < top_k ? expf(my_v - top) : 0.0f;
  float sum = 0.0f;
  for (int j = 0; j < top_k; ++j) sum = __fadd_rn(sum, __shfl_sync(0xFFFFFFFFu, ex, j));
  if (lane < top_k) {
    ids[t * top_k + lane] = my_id;
    weights[t * top_k + lane] = __fdiv_rn(ex, sum);
    atomicAdd(counts + my_id, 1);
  }
}

__global__ void scatter_kernel(const int32_t* ids, int32_t entries, int32_t top_k,
                               const int32_t* group_offsets, int32_t* cursors, int32_t* perm_token,
                               int32_t* row_of, int32_t* row_expert) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= entries) return;
  const int32_t e = ids[i];
  // Arrival order inside an expert varies between runs; rows are computed independently, so
  // the values do not.
  const int32_t row = group_offsets[e] + atomicAdd(cursors + e, 1);
  perm_token[row] = i / top_k;
  row_of[i] = row;
  if (row_expert != nullptr) row_expert[row] = e;
}

__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

// One CTA per token; each thread owns whole 8-element vectors of the hidden dimension.
__global__ void __launch_bounds__(kCombineThreads)
    combine_kernel(const __nv_bfloat16* y, const int32_t* row_of, const float* weights,
                   int32_t top_k, int32_t hidden, const __nv_bfloat16* y_shared,
                   const __nv_bfloat16* hidden_states, const __nv_bfloat16* shared_gate_weight,
                   __nv_bfloat16* out) {
  const int64_t t = blockIdx.x;
  const int vecs = hidden / 8;
  float gate = 0.0f;
  if (y_shared != nullptr) {
    // sigmoid(hidden[t] . shared_gate_weight): per-thread partials in a fixed order, then a
    // fixed reduction tree (the block size never changes).
    __shared__ float partial[kCombineThreads / 32];
    float dot = 0.0f;
    for (int v = threadIdx.x; v < vecs; v += kCombineThreads) {
      float x[8], w[8];
      unpack8(reinterpret_cast<const uint4*>(hidden_states + t * hidden)[v], x);
      unpack8(reinterpret_cast<const uint4*>(shared_gate_weight)[v], w);
#pragma unroll
      for (int i = 0; i < 8; ++i) dot = __fadd_rn(dot, __fmul_rn(x[i], w[i]));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) dot = __fadd_rn(dot, __shfl_xor_sync(0xFFFFFFFFu, dot, off));
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = dot;
    __syncthreads();
    float z = 0.0f;
#pragma unroll
    for (int w = 0; w < kCombineThreads / 32; ++w) z = __fadd_rn(z, partial[w]);
    gate = math::sigmoid(z);
  }
  for (int v = threadIdx.x; v < vecs; v += kCombineThreads) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int j = 0; j < top_k; ++j) {
      const int64_t row = row_of[t * top_k + j];
      const float w = weights[t * top_k + j];
      float f[8];
      unpack8(reinterpret_cast<const uint4*>(y + row * hidden)[v], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(w, f[i]));
    }
    if (y_shared != nullptr) {
      float f[8];
      unpack8(reinterpret_cast<const uint4*>(y_shared + t * hidden)[v], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = __fadd_rn(acc[i], __fmul_rn(gate, f[i]));
    }
    uint4 o;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&o);
#pragma unroll
    for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
    reinterpret_cast<uint4*>(out + t * hidden)[v] = o;
  }
}

}  // namespace qwen35_trt::kernels::moe_detail::routing
