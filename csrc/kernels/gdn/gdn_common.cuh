// Device helpers shared by the Gated DeltaNet kernels: sequence lookup, vector bf16 loads,
// warp reductions, the m16n8k16 bf16 tensor-core MMA and its fragment loads. Internal to
// csrc/kernels/gdn/; the host-side pieces are in gdn_host.h.
#pragma once

#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "gdn_host.h"
#include "qwen35_trt/common/gdn_math.h"
#include "qwen35_trt/kernels/gdn.h"

// Hooks for csrc/tests/simt_emulator.h, which runs these kernels on the CPU in tests: the
// declaration of a kernel's dynamic shared memory, and (below) the tensor-core MMA.
#ifndef QWEN35_DYNAMIC_SMEM
#define QWEN35_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace qwen35_trt::kernels::gdn_detail {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------------------------------------
// Sequences

// Token range [start, end) of sequence `b`, clamped to [0, tokens] so that a corrupt cu_seqlens
// can never send a kernel outside its tensors (an empty range means: skip).
struct SeqRange {
  int64_t start, end;
};
__device__ __forceinline__ SeqRange seq_range(const GdnSequences& s, int64_t b) {
  if (s.cu_seqlens == nullptr) return {b, b + 1};
  int64_t start = s.cu_seqlens[b], end = s.cu_seqlens[b + 1];
  start = start < 0 ? 0 : (start > s.tokens ? s.tokens : start);
  end = end < start ? start : (end > s.tokens ? s.tokens : end);
  return {start, end};
}

__device__ __forceinline__ bool reads_initial_state(const GdnSequences& s, int64_t b) {
  return s.has_initial_state == nullptr || s.has_initial_state[b] != 0;
}

// The slot of sequence b, or -1 when out of range (the sequence is then skipped).
__device__ __forceinline__ int64_t slot_of(const GdnSequences& s, int64_t b) {
  const int64_t slot = s.slots[b];
  return (slot >= 0 && slot < s.num_slots) ? slot : -1;
}

// ---------------------------------------------------------------------------------------------
// Loads and conversions

// N consecutive bf16 values (N in {1, 2, 4, 8}; the address aligned to 2 N bytes) as floats.
template <int N>
__device__ __forceinline__ void load_bf16(const bf16* p, float* out) {
  if constexpr (N == 8) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else if constexpr (N == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const float2 f0 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 f1 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    out[0] = f0.x;
    out[1] = f0.y;
    out[2] = f1.x;
    out[3] = f1.y;
  } else if constexpr (N == 2) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
    out[0] = f.x;
    out[1] = f.y;
  } else {
    static_assert(N == 1, "N must be 1, 2, 4 or 8");
    out[0] = __bfloat162float(*p);
  }
}

// Two floats -> one 32-bit word of two bf16 (RNE), `lo` in the low half (the lower address).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
  return x;
}

// ---------------------------------------------------------------------------------------------
// Tensor cores: mma.sync m16n8k16, bf16 inputs, fp32 accumulators (sm_80 and later, including
// every target of this project). Fragment layout, with g = lane / 4 and t = lane % 4:
//   A (16x16, row-major): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B (16x8, k x n):      b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C (16x8):             c0, c1 = C[g][2t], C[g][2t+1];  c2, c3 = C[g+8][2t], C[g+8][2t+1]
// In shared memory every operand is kept "k-contiguous": A as [M][ld] and B as B^T [N][ld], so
// each fragment register is one aligned 32-bit load. With ld = K + 8 (K a multiple of 32) the 8
// rows x 4 words of a fragment load fall into 32 distinct banks.

__device__ __forceinline__ void mma_bf16_16x8x16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_mma_bf16_16x8x16(c, a, b);  // csrc/tests/simt_emulator.h
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// The same with C = 0 (the accumulators are written, not read).
__device__ __forceinline__ void mma_bf16_16x8x16_zero(float c[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(QWEN35_SIMT_EMULATION)
  c[0] = c[1] = c[2] = c[3] = 0.0f;
  qwen35_emulated_mma_bf16_16x8x16(c, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};\n"
      : "=f"(c[0]), "=f"(c[1]), "=f"(c[2]), "=f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
#endif
}

// A fragment of rows [row0, row0 + 16) and columns [k0, k0 + 16) of a row-major [M][ld] tile.
__device__ __forceinline__ void load_a_frag(uint32_t a[4], const bf16* base, int ld, int row0, int k0, int lane) {
  const bf16* p0 = base + (row0 + (lane >> 2)) * ld + k0 + 2 * (lane & 3);
  const bf16* p1 = p0 + 8 * ld;
  a[0] = *reinterpret_cast<const uint32_t*>(p0);
  a[1] = *reinterpret_cast<const uint32_t*>(p1);
  a[2] = *reinterpret_cast<const uint32_t*>(p0 + 8);
  a[3] = *reinterpret_cast<const uint32_t*>(p1 + 8);
}

// B fragment for output columns [n0, n0 + 8) and k in [k0, k0 + 16), from B^T stored [N][ld].
__device__ __forceinline__ void load_b_frag(uint32_t b[2], const bf16* base_t, int ld, int n0, int k0, int lane) {
  const bf16* p = base_t + (n0 + (lane >> 2)) * ld + k0 + 2 * (lane & 3);
  b[0] = *reinterpret_cast<const uint32_t*>(p);
  b[1] = *reinterpret_cast<const uint32_t*>(p + 8);
}

// C[MT*16 x NT*8] += A[rows a_row0.., K] * B[K, cols n0..] over k in [0, K), K % 16 == 0.
template <int MT, int NT>
__device__ __forceinline__ void mma_tile(float (&c)[MT][NT][4], const bf16* a, int lda, int a_row0, const bf16* b_t,
                                         int ldb, int n0, int K, int lane) {
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t af[MT][4];
    uint32_t bf[NT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m) load_a_frag(af[m], a, lda, a_row0 + 16 * m, k0, lane);
#pragma unroll
    for (int n = 0; n < NT; ++n) load_b_frag(bf[n], b_t, ldb, n0 + 8 * n, k0, lane);
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < NT; ++n) mma_bf16_16x8x16(c[m][n], af[m], bf[n]);
  }
}

template <int MT, int NT>
__device__ __forceinline__ void zero_tile(float (&c)[MT][NT][4]) {
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) c[m][n][e] = 0.0f;
}

// ---------------------------------------------------------------------------------------------
// ldmatrix fragment loads and cp.async copies (sm_80 and later). ldmatrix.x4 reads four 8 x 8 bf16
// matrices, lanes 8j..8j+7 giving the 16-byte row addresses of matrix j; with .trans each lane
// receives a column pair instead of a row pair, which is how a tile stored [k][n] (or [k][m])
// becomes a B (or A) fragment without a transpose through shared memory.

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16* p, bool trans) {
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_ldmatrix_x4(r, p, trans);  // csrc/tests/simt_emulator.h
#else
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  if (trans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  }
#endif
}

// A fragment (rows [row0, row0 + 16), k in [k0, k0 + 16)) of a row-major [M][ld] tile.
__device__ __forceinline__ void ldsm_a(uint32_t a[4], const bf16* base, int ld, int row0, int k0, int lane) {
  ldmatrix_x4(a, base + (row0 + (lane & 15)) * ld + k0 + 8 * (lane >> 4), false);
}

// A fragment of A = X^T (rows m in [m0, m0 + 16), k in [k0, k0 + 16)) from X stored [K][ld].
__device__ __forceinline__ void ldsm_a_trans(uint32_t a[4], const bf16* base, int ld, int m0, int k0, int lane) {
  ldmatrix_x4(a, base + (k0 + (lane & 7) + 8 * (lane >> 4)) * ld + m0 + 8 * ((lane >> 3) & 1), true);
}

// B fragments of two 8-column tiles (n in [n0, n0 + 16), k in [k0, k0 + 16)) from B stored [K][ld]:
// b[0] for columns n0.., b[1] for n0 + 8...
__device__ __forceinline__ void ldsm_b2_trans(uint32_t b[2][2], const bf16* base, int ld, int k0, int n0, int lane) {
  uint32_t r[4];
  ldmatrix_x4(r, base + (k0 + (lane & 15)) * ld + n0 + 8 * (lane >> 4), true);
  b[0][0] = r[0];
  b[0][1] = r[1];
  b[1][0] = r[2];
  b[1][1] = r[3];
}

// Two adjacent 16 x 8 accumulator tiles (columns [n0, n0 + 16)) as bf16 into rows [row0, row0 + 16)
// of a row-major [M][ld] tile: one stmatrix.x4 (sm_90 and later) instead of four 32-bit stores.
__device__ __forceinline__ void stsm_acc2(bf16* base, int ld, int row0, int n0, const float (&lo)[4],
                                          const float (&hi)[4], int lane) {
  const uint32_t r[4] = {pack_bf16x2(lo[0], lo[1]), pack_bf16x2(lo[2], lo[3]), pack_bf16x2(hi[0], hi[1]),
                         pack_bf16x2(hi[2], hi[3])};
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_stmatrix_x4(base + (row0 + (lane & 15)) * ld + n0 + 8 * (lane >> 4), r);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const auto a = static_cast<uint32_t>(__cvta_generic_to_shared(base + (row0 + (lane & 15)) * ld + n0 + 8 * (lane >> 4)));
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(r[0]), "r"(r[1]),
               "r"(r[2]), "r"(r[3])
               : "memory");
#else
  bf16* p = base + (row0 + (lane >> 2)) * ld + n0 + 2 * (lane & 3);
  *reinterpret_cast<uint32_t*>(p) = r[0];
  *reinterpret_cast<uint32_t*>(p + 8 * ld) = r[1];
  *reinterpret_cast<uint32_t*>(p + 8) = r[2];
  *reinterpret_cast<uint32_t*>(p + 8 * ld + 8) = r[3];
#endif
}

// C[MT*16 x NT*8] += A[rows a_row0.., K] * B[K, cols n0..], A row-major [M][lda] (or, with
// kTransA, stored as A^T [K][lda]) and B stored [K][ldb]; ldmatrix fragments, NT even.
template <int MT, int NT, bool kTransA = false>
__device__ __forceinline__ void mma_tile_ldsm(float (&c)[MT][NT][4], const bf16* a, int lda, int a_row0, const bf16* b,
                                              int ldb, int n0, int K, int lane) {
  static_assert(NT % 2 == 0, "B fragments come in pairs of 8-column tiles");
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t af[MT][4];
    uint32_t bf[NT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if constexpr (kTransA) ldsm_a_trans(af[m], a, lda, a_row0 + 16 * m, k0, lane);
      else ldsm_a(af[m], a, lda, a_row0 + 16 * m, k0, lane);
    }
#pragma unroll
    for (int n = 0; n < NT; n += 2) ldsm_b2_trans(reinterpret_cast<uint32_t(&)[2][2]>(bf[n]), b, ldb, k0, n0 + 8 * n, lane);
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < NT; ++n) mma_bf16_16x8x16(c[m][n], af[m], bf[n]);
  }
}

// 16-byte global -> shared copy that does not wait (cp.async.cg: L2 only); complete after
// cp_async_wait_all() in the issuing thread, visible to the block after a barrier.
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src) {
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_cp_async16(smem_dst, gmem_src);
#else
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(gmem_src) : "memory");
#endif
}
// The same with compile-time element offsets: dst + kDst from src + kSrc, the offsets folded into
// the instruction's address immediates instead of a 64-bit add per copy.
template <int kDst, int kSrc>
__device__ __forceinline__ void cp_async16_at(bf16* dst, const bf16* src) {
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_cp_async16(dst + kDst, src + kSrc);
#else
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%3], 16;\n" ::"r"(d), "l"(src), "n"(2 * kDst), "n"(2 * kSrc)
               : "memory");
#endif
}
// N copies, the i-th at dst + i kDstStride from src + i kSrcStride.
template <int N, int kDstStride, int kSrcStride>
__device__ __forceinline__ void cp_async16_strided(bf16* dst, const bf16* src) {
  if constexpr (N > 0) {
    cp_async16_strided<N - 1, kDstStride, kSrcStride>(dst, src);
    cp_async16_at<(N - 1) * kDstStride, (N - 1) * kSrcStride>(dst, src);
  }
}
__device__ __forceinline__ void cp_async_commit() {
#if !defined(QWEN35_SIMT_EMULATION)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(QWEN35_SIMT_EMULATION)
  qwen35_emulated_cp_async_wait_all();
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Row / column of accumulator element e of tile (m, n), relative to the tile origin.
__device__ __forceinline__ int acc_row(int m, int e, int lane) { return 16 * m + (lane >> 2) + 8 * (e >> 1); }
__device__ __forceinline__ int acc_col(int n, int e, int lane) { return 8 * n + 2 * (lane & 3) + (e & 1); }

// f(m, n, half, row, col) for every pair of neighbouring elements (2 half, 2 half + 1) of a warp's
// M x N accumulator tiles: row and the pair's first column relative to the tiles' origin.
template <int M, int N, typename F>
__device__ __forceinline__ void for_each_acc_pair(int lane, F&& f) {
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int n = 0; n < N; ++n)
#pragma unroll
      for (int half = 0; half < 2; ++half) f(m, n, half, acc_row(m, 2 * half, lane), acc_col(n, 0, lane));
}

}  // namespace qwen35_trt::kernels::gdn_detail
