// GatedAttention with a paged KV cache: the two kernels of one call (contract in
// qwen35_trt/kernels/attention.h and docs/ops.md). Both run the per-head scalar math of
// qwen35_trt/common/attention_math.h in the CPU reference's order, so they compute its bits
// (except where the device's expf / cosf / sinf / powf differ from the host's in the last place).
//
// prepare: a warp per token and 32 heads, a lane per head of [0, nh + nkv): query heads first,
//   then kv heads. A lane normalises and rotates its head in fp32 (the sum of squares sequential
//   over the head, as the reference); queries go to the workspace [T, nh, hd], keys and values
//   into the pool at the token's position.
// attend: a warp per (token, query head); lane l holds dims [l E, (l + 1) E), E = hd / 32. Two
//   passes over the keys 0..pos in ascending order, both computing each score the same way: the
//   first builds the softmax max and sum, the second sums prob * v. Keys are read through the
//   block table, never staged, so nothing depends on other sequences or on the batch.
//
// A token finds its sequence by a binary search of cu_seqlens (B + 1 entries, log2 B reads; any
// values give an index in [0, B)), then checks the range, the context length and every block id
// the sequence touches; a token that fails is skipped by both kernels (nothing written). The check
// is warp-wide (every lane reads every 32nd table entry, one shuffle reduction), which is why a
// warp never mixes tokens and every lane reaches every shuffle: the CPU emulator
// (csrc/tests/simt_emulator.h) needs whole warps at each shuffle, and so does the per-key
// butterfly of `attend`.
//
// Kernel bodies (device code only; the launcher is gated_attention.cu). Header-only so that
// csrc/tests/test_attention_emulated.cpp can run this exact source on the CPU.
#pragma once

#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "qwen35_trt/common/attention_math.h"
#include "qwen35_trt/common/nvfp4_codec.h"
#include "qwen35_trt/common/scalar_math.h"
#include "qwen35_trt/kernels/attention.h"

namespace qwen35_trt::kernels::attention_impl {

using bf16 = __nv_bfloat16;
namespace am = qwen35_trt::attention;
namespace math = qwen35_trt::math;
using qwen35_trt::nvfp4::bf16_to_float;
using qwen35_trt::nvfp4::float_to_bf16;

constexpr int kThreads = 128;  // both kernels: 4 warps per block
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid cap; the kernels loop over the rest

// ---------------------------------------------------------------------------------------------
// bf16 rows <-> floats. The bits go through the codec the reference uses (nvfp4_codec.h), so a
// stored value has the reference's bits even for NaN. Loads are as wide as N allows: 16 bytes for
// N % 8 == 0 (the address then 16-byte aligned), 8 for N % 4 == 0, 4 for even N, else 2.

__device__ __forceinline__ void unpack2(uint32_t w, float* out) {
  out[0] = bf16_to_float(static_cast<uint16_t>(w & 0xFFFFu));  // the lower address
  out[1] = bf16_to_float(static_cast<uint16_t>(w >> 16));
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(float_to_bf16(lo)) | (static_cast<uint32_t>(float_to_bf16(hi)) << 16);
}

template <int N>
__device__ __forceinline__ void load_row(const bf16* src, float* out) {
  const auto* s = reinterpret_cast<const uint16_t*>(src);
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 8) {
      const uint4 u = *reinterpret_cast<const uint4*>(s + i);
      unpack2(u.x, out + i);
      unpack2(u.y, out + i + 2);
      unpack2(u.z, out + i + 4);
      unpack2(u.w, out + i + 6);
    }
  } else if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint2 u = *reinterpret_cast<const uint2*>(s + i);
      unpack2(u.x, out + i);
      unpack2(u.y, out + i + 2);
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) unpack2(*reinterpret_cast<const uint32_t*>(s + i), out + i);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = bf16_to_float(s[i]);
  }
}

template <int N>
__device__ __forceinline__ void store_row(bf16* dst, const float* in) {
  auto* d = reinterpret_cast<uint16_t*>(dst);
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 8) {
      *reinterpret_cast<uint4*>(d + i) =
          make_uint4(pack2(in[i], in[i + 1]), pack2(in[i + 2], in[i + 3]), pack2(in[i + 4], in[i + 5]),
                     pack2(in[i + 6], in[i + 7]));
    }
  } else if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      *reinterpret_cast<uint2*>(d + i) = make_uint2(pack2(in[i], in[i + 1]), pack2(in[i + 2], in[i + 3]));
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) *reinterpret_cast<uint32_t*>(d + i) = pack2(in[i], in[i + 1]);
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) d[i] = float_to_bf16(in[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Sequences and the KV pool

struct TokenSeq {
  int64_t seq;      // the sequence i of the token
  int64_t start;    // cu_seqlens[i]
  int64_t len;      // its new tokens
  int64_t context;  // context_lens[i]
  bool ok;          // range and context valid (block ids: blocks_valid)
};

// The sequence of token t: the last i in [0, B) with cu_seqlens[i] <= t (a binary search that
// reads only cu_seqlens[0..B], whatever their values), and whether t lies in its range, the range
// in [0, T], the context >= 0 and context + len within the table row's blocks.
__device__ __forceinline__ TokenSeq token_sequence(const GatedAttentionParams& p, int64_t t) {
  int64_t lo = 0, hi = p.batch - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  TokenSeq s;
  s.seq = lo;
  s.start = p.cu_seqlens[lo];
  const int64_t end = p.cu_seqlens[lo + 1];
  s.len = end - s.start;
  s.context = p.context_lens[lo];
  s.ok = s.start >= 0 && s.start <= t && t < end && end <= p.tokens && s.context >= 0 &&
         s.context + s.len <= p.max_blocks_per_seq * p.block_size;
  return s;
}

// Whether the token's sequence is valid and every block it touches (logical blocks
// 0 .. (context + len - 1) / block_size) has an id in [0, num_blocks). Warp-wide: all 32 lanes
// call it for the same token and get the same answer.
__device__ __forceinline__ bool sequence_valid(const GatedAttentionParams& p, const TokenSeq& s, int lane) {
  float bad = s.ok ? 0.0f : 1.0f;
  if (s.ok) {
    const int32_t* row = p.block_tables + s.seq * p.max_blocks_per_seq;
    const int64_t used = (s.context + s.len + p.block_size - 1) / p.block_size;
    for (int64_t j = lane; j < used; j += 32) {
      const int32_t b = row[j];
      if (b < 0 || b >= p.num_blocks) bad = 1.0f;
    }
  }
#pragma unroll
  for (int m = 16; m >= 1; m /= 2) bad = fmaxf(bad, __shfl_xor_sync(kFullMask, bad, m));
  return bad == 0.0f;
}

// Row 0 of K (kind 0) or V (kind 1) of kv head g in physical block b: [block_size, HD] dense.
template <int HD>
__device__ __forceinline__ int64_t pool_offset(const GatedAttentionParams& p, int64_t b, int kind, int g) {
  return ((b * 2 + kind) * p.num_kv_heads + g) * static_cast<int64_t>(p.block_size) * HD;
}

// ---------------------------------------------------------------------------------------------
// prepare: q/k RMSNorm and RoPE, queries to the workspace, keys and values into the pool.

template <int E>
__global__ void __launch_bounds__(kThreads) gated_attention_prepare_kernel(GatedAttentionParams p, bf16* q_out) {
  constexpr int HD = 32 * E;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nh = p.num_heads, nkv = p.num_kv_heads;
  const int head = static_cast<int>(blockIdx.y) * 32 + lane;
  const int half = p.rotary_dim / 2;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp; t < p.tokens;
       t += static_cast<int64_t>(gridDim.x) * kWarps) {
    const TokenSeq s = token_sequence(p, t);
    if (!sequence_valid(p, s, lane) || head >= nh + nkv) continue;
    const int64_t pos = s.context + (t - s.start);
    const bool query = head < nh;
    const int g = head - nh;  // kv head (when !query)

    float x[HD];
    load_row<HD>(query ? p.qg + t * p.qg_stride + static_cast<int64_t>(2 * head) * HD
                       : p.k + t * p.k_stride + static_cast<int64_t>(g) * HD,
                 x);
    const float inv_rms = am::head_rms_inverse(x, HD, p.eps);
    const bf16* w = query ? p.q_norm_weight : p.k_norm_weight;
#pragma unroll
    for (int d = 0; d < HD; d += 8) {
      float wv[8];
      load_row<8>(w + d, wv);
#pragma unroll
      for (int i = 0; i < 8; ++i) x[d + i] = am::head_rms_apply(x[d + i], inv_rms, wv[i]);
    }
    // Rotate pairs (i, i + half) from the normed values; dims >= rotary_dim pass unchanged.
    for (int i = 0; i < half; ++i) {
      float c, sn;
      am::rope_cos_sin(pos, i, p.rotary_dim, p.rope_theta, &c, &sn);
      const float a = x[i], b = x[i + half];
      x[i] = am::rope_apply(a, b, true, c, sn);
      x[i + half] = am::rope_apply(b, a, false, c, sn);
    }

    if (query) {
      store_row<HD>(q_out + (t * nh + head) * HD, x);
    } else {
      const int32_t* row = p.block_tables + s.seq * p.max_blocks_per_seq;
      const int64_t b = row[pos / p.block_size];
      const int64_t r = pos % p.block_size;
      store_row<HD>(p.kv_pool + pool_offset<HD>(p, b, 0, g) + r * HD, x);
      const uint4* src = reinterpret_cast<const uint4*>(p.v + t * p.v_stride + static_cast<int64_t>(g) * HD);
      uint4* dst = reinterpret_cast<uint4*>(p.kv_pool + pool_offset<HD>(p, b, 1, g) + r * HD);
#pragma unroll
      for (int i = 0; i < HD / 8; ++i) dst[i] = src[i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// attend: softmax(scores) V over positions 0..pos, times sigmoid(gate).

// The score of one key (every lane returns the same bits): the lane's partial dot product over its
// E dims in ascending order, the butterfly of attention_math.h's head_dot, score_from_dot.
template <int E>
__device__ __forceinline__ float key_score(const float (&q)[E], const bf16* key, float scale) {
  float k[E];
  load_row<E>(key, k);
  float acc = 0.0f;
#pragma unroll
  for (int e = 0; e < E; ++e) acc = math::add_rn(acc, math::mul_rn(q[e], k[e]));
#pragma unroll
  for (int m = 16; m >= 1; m /= 2) acc = math::add_rn(acc, __shfl_xor_sync(kFullMask, acc, m));
  return am::score_from_dot(acc, scale);
}

template <int E>
__global__ void __launch_bounds__(kThreads) gated_attention_attend_kernel(GatedAttentionParams p, const bf16* q_in) {
  constexpr int HD = 32 * E;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nh = p.num_heads;
  const int group = nh / p.num_kv_heads;
  const int64_t items = p.tokens * nh;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + warp; item < items;
       item += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t t = item / nh;
    const int h = static_cast<int>(item % nh);
    const TokenSeq s = token_sequence(p, t);
    if (!sequence_valid(p, s, lane)) continue;  // the same for the whole warp
    const int64_t keys = s.context + (t - s.start) + 1;  // positions 0..pos
    const int g = h / group;
    const int32_t* table = p.block_tables + s.seq * p.max_blocks_per_seq;
    const int64_t bs = p.block_size;

    float q[E];
    load_row<E>(q_in + (t * nh + h) * HD + lane * E, q);

    am::SoftmaxState st = am::softmax_start();
    for (int64_t j0 = 0; j0 < keys; j0 += bs) {
      const bf16* kb = p.kv_pool + pool_offset<HD>(p, table[j0 / bs], 0, g) + lane * E;
      const int64_t n = keys - j0 < bs ? keys - j0 : bs;
      for (int64_t r = 0; r < n; ++r) am::softmax_add(st, key_score<E>(q, kb + r * HD, p.scale));
    }

    float o[E];
#pragma unroll
    for (int e = 0; e < E; ++e) o[e] = 0.0f;
    for (int64_t j0 = 0; j0 < keys; j0 += bs) {
      const int64_t b = table[j0 / bs];
      const bf16* kb = p.kv_pool + pool_offset<HD>(p, b, 0, g) + lane * E;
      const bf16* vb = p.kv_pool + pool_offset<HD>(p, b, 1, g) + lane * E;
      const int64_t n = keys - j0 < bs ? keys - j0 : bs;
      for (int64_t r = 0; r < n; ++r) {
        const float prob = am::softmax_prob(st, key_score<E>(q, kb + r * HD, p.scale));
        float v[E];
        load_row<E>(vb + r * HD, v);
#pragma unroll
        for (int e = 0; e < E; ++e) o[e] = math::add_rn(o[e], math::mul_rn(prob, v[e]));
      }
    }

    float gate[E];
    load_row<E>(p.qg + t * p.qg_stride + static_cast<int64_t>(2 * h + 1) * HD + lane * E, gate);
#pragma unroll
    for (int e = 0; e < E; ++e) o[e] = am::gated_output(o[e], gate[e]);
    store_row<E>(p.out + t * p.out_stride + static_cast<int64_t>(h) * HD + lane * E, o);
  }
}

// ---------------------------------------------------------------------------------------------
// Grids (both kernels loop over what a capped grid does not cover).

inline unsigned capped_blocks(int64_t warps) {
  const int64_t blocks = (warps + kWarps - 1) / kWarps;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// (token warps, head groups of 32).
inline dim3 prepare_grid(const GatedAttentionParams& p) {
  return dim3(capped_blocks(p.tokens), static_cast<unsigned>((p.num_heads + p.num_kv_heads + 31) / 32), 1);
}

// (token x query head) warps.
inline dim3 attend_grid(const GatedAttentionParams& p) { return dim3(capped_blocks(p.tokens * p.num_heads), 1, 1); }

}  // namespace qwen35_trt::kernels::attention_impl
