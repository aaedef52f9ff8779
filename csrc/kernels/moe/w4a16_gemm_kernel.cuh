// Device code of the W4A16 grouped GEMM (launcher: grouped_gemm_w4a16_mma.cu; contract:
// W4A16GemmArgs in moe_internal.h). A header so that csrc/tests/test_moe_emulated.cpp can run the
// same source on the CPU through csrc/tests/simt_emulator.h (QWEN35_SIMT_EMULATION), where the
// cp.async copies become synchronous copies, ldmatrix reads its fragment directly and the MMA is
// reconstructed from the 32 lanes' fragments.
//
// Per CTA tile: BM rows x BN output columns (x 2 weight operands for SwiGLU), K in stages of 64
// fed by a cp.async pipeline. Weights stay packed in shared memory (32 bytes per row per stage);
// each thread converts exactly the codes its B fragments need (E2M1 -> BF16 by byte permutes,
// times the FP8 block scale, exact in BF16) and the per-expert global scale multiplies the fp32
// sums in the epilogue. The grid is persistent; tiles are (row tile, column tile) pairs, the row
// tiles coming from the device-side tile list, so no host synchronisation is ever needed.
//
// Batch invariance: a row's result depends only on its own activations and its expert's weights:
// the K loop order is fixed, there is no split-K, and the MMA computes rows independently, so
// the row-tile height (chosen from the token count) never changes a result.
#pragma once

#include <cstdint>
#include <cstring>

#include "moe_internal.h"
#include "qwen35_trt/common/moe_math.h"
#include "qwen35_trt/common/nvfp4_codec.h"
#include "qwen35_trt/common/scalar_math.h"
#include "qwen35_trt/kernels/e2m1_bf16.h"

namespace qwen35_trt::kernels::moe_detail::w4a16 {

constexpr int kBK = 64;                // K per pipeline stage (4 MMA k-steps)
constexpr int kAStride = kBK + 8;      // bf16 per A row in shared memory (144 B: ldmatrix is
                                       // conflict-free at an odd multiple of 16 B)
constexpr int kBStride = 48;           // bytes per packed B row in shared memory (32 + 16 pad:
                                       // 8-byte fragment reads of 8 rows hit distinct banks)

template <int BM_, int BN_, int WM_, int WN_, int STAGES_>
struct Config {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int MI = BM / WM / 16;  // m16 fragments per warp
  static constexpr int NI = BN / WN / 8;   // n8 fragments per warp and operand
  static_assert(MI >= 1 && NI >= 1 && BM % (WM * 16) == 0 && BN % (WN * 8) == 0, "tile shape");
};

using SmallTile = Config<16, 32, 1, 4, 6>;    // decode: many narrow tiles keep the SMs streaming
using MediumTile = Config<64, 64, 2, 2, 4>;
using LargeTile = Config<128, 64, 4, 2, 4>;   // prefill

template <class C, bool kSwiGLU>
struct Smem {
  static constexpr int kBRows = (kSwiGLU ? 2 : 1) * C::BN;
  static constexpr int kABytes = C::BM * kAStride * 2;
  static constexpr int kBBytes = kBRows * kBStride;
  static constexpr int kSBytes = kBRows * 4;
  static constexpr int kStageBytes = kABytes + kBBytes + kSBytes;
  static constexpr int kBytes = C::STAGES * kStageBytes;
};

// Runtime facts about the operands, fixed per launch.
struct Plan {
  int32_t k_tiles;
  int32_t n_tiles;
  int32_t b_chunk;       // 16 (K % 32 == 0 and 16-byte aligned rows) or 8 bytes per cp.async
  bool scales_async;     // 4-byte aligned scale groups (swizzled, or K % 64 == 0)
  bool out_pairs;        // 4-byte aligned bf16x2 stores
};

struct KernelArgs {
  W4A16GemmArgs g;
  Plan plan;
};

// --- host side: the per-launch plan (also used by the emulated test) -------------------------

inline bool aligned_to(const void* p, std::size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

inline bool weights_ok(const Nvfp4DeviceWeights& w, int32_t k, std::size_t align) {
  const int64_t row_bytes = k / 2;
  return w.packed != nullptr && w.scales != nullptr && w.global_scale != nullptr &&
         aligned_to(w.packed, align) && w.packed_stride % static_cast<int64_t>(align) == 0 &&
         row_bytes % static_cast<int64_t>(align) == 0 && w.row_offset >= 0 &&
         (w.layout == ScaleLayout::kRowMajor || w.layout == ScaleLayout::kSwizzled128x4);
}

inline bool scales_aligned4(const Nvfp4DeviceWeights& w, int32_t k) {
  if (!aligned_to(w.scales, 4) || w.scale_stride % 4 != 0) return false;
  return w.layout == ScaleLayout::kSwizzled128x4 || (k / nvfp4::kBlockSize) % 4 == 0;
}

// Validates the operands and fills `plan` (all but n_tiles, which depends on the tile config).
// False: invalid shapes or misaligned pointers.
inline bool make_plan(const W4A16GemmArgs& g, Plan& plan) {
  if (g.a == nullptr || g.out == nullptr || !aligned_to(g.a, 16) || g.lda % 8 != 0 || g.lda < g.k ||
      g.ldo < g.n) {
    return false;  // A rows are read in 16-byte chunks
  }
  const bool wide = g.k % 32 == 0 && weights_ok(g.b0, g.k, 16) && (!g.swiglu || weights_ok(g.b1, g.k, 16));
  if (!wide && (!weights_ok(g.b0, g.k, 8) || (g.swiglu && !weights_ok(g.b1, g.k, 8)))) return false;
  plan.k_tiles = (g.k + kBK - 1) / kBK;
  plan.b_chunk = wide ? 16 : 8;
  plan.scales_async = scales_aligned4(g.b0, g.k) && (!g.swiglu || scales_aligned4(g.b1, g.k));
  plan.out_pairs = aligned_to(g.out, 4) && g.ldo % 2 == 0;
  return true;
}

template <class C>
inline int32_t n_tiles(const W4A16GemmArgs& g) { return (g.n + C::BN - 1) / C::BN; }

// --- the primitives, real or emulated ----------------------------------------------------------
#if defined(QWEN35_SIMT_EMULATION)

inline void cp_async(void* dst, const void* src, int bytes, bool valid) {
  if (valid) {
    std::memcpy(dst, src, static_cast<std::size_t>(bytes));
  } else {
    std::memset(dst, 0, static_cast<std::size_t>(bytes));
  }
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}
template <typename T>
inline T ldg(const T* p) { return *p; }

inline uint32_t load_u32(const __nv_bfloat16* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// The fragment ldmatrix.x4 delivers when lane l gives the address of row (l & 15), column
// (l >> 4) * 8 of a 16 x 16 bf16 tile (see the device version).
inline void ldmatrix_a(uint32_t (&r)[4], const __nv_bfloat16* tile, int stride) {
  const int lane = static_cast<int>(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  r[0] = load_u32(tile + g * stride + 2 * t);
  r[1] = load_u32(tile + (g + 8) * stride + 2 * t);
  r[2] = load_u32(tile + g * stride + 8 + 2 * t);
  r[3] = load_u32(tile + (g + 8) * stride + 8 + 2 * t);
}
inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  qwen35_emulated_mma_bf16_16x8x16(c, a, b);
}
inline uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  const auto mul = [](uint32_t x, uint32_t y) {
    return static_cast<uint32_t>(nvfp4::float_to_bf16(nvfp4::bf16_to_float(static_cast<uint16_t>(x)) *
                                                      nvfp4::bf16_to_float(static_cast<uint16_t>(y))));
  };
  return mul(a & 0xFFFFu, b & 0xFFFFu) | (mul(a >> 16, b >> 16) << 16);
}
inline void store_bf16x2(__nv_bfloat16* p, float v0, float v1) {
  const uint16_t h[2] = {nvfp4::float_to_bf16(v0), nvfp4::float_to_bf16(v1)};
  std::memcpy(static_cast<void*>(p), h, 4);
}
inline void store_bf16(__nv_bfloat16* p, float v) {
  const uint16_t h = nvfp4::float_to_bf16(v);
  std::memcpy(static_cast<void*>(p), &h, 2);
}

#else

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// Asynchronous global -> shared copy of 16, 8 or 4 bytes; `valid` false zero-fills (src unread).
__device__ __forceinline__ void cp_async(void* dst, const void* src, int bytes, bool valid) {
  if (bytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
  } else if (bytes == 8) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 8 : 0));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 4 : 0));
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
template <typename T>
__device__ __forceinline__ T ldg(const T* p) { return __ldg(p); }

// A 16 x 16 bf16 tile (row stride `stride` elements) as the m16n8k16 A fragment: lanes 0-15 give
// rows 0-15 at column 0, lanes 16-31 rows 0-15 at column 8, so matrices 0..3 are (rows 0-7,
// k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3.
__device__ __forceinline__ void ldmatrix_a(uint32_t (&r)[4], const __nv_bfloat16* tile, int stride) {
  const int lane = threadIdx.x & 31;
  const __nv_bfloat16* p = tile + (lane & 15) * stride + (lane >> 4) * 8;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  const __nv_bfloat162 y = *reinterpret_cast<__nv_bfloat162*>(&b);
  x = __hmul2(x, y);
  return *reinterpret_cast<uint32_t*>(&x);
}
__device__ __forceinline__ void store_bf16x2(__nv_bfloat16* p, float v0, float v1) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(v0, v1);
}
__device__ __forceinline__ void store_bf16(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

#endif

// --- the kernel body ----------------------------------------------------------------------------

// Where a tile's rows come from and go to.
struct TileRows {
  int32_t group;
  int64_t row0;   // first output row (permuted row in grouped mode)
  int32_t valid;  // rows of this tile inside the group, 1..BM
};

__device__ __forceinline__ const uint8_t* weight_row(const Nvfp4DeviceWeights& w, int32_t g,
                                                     int32_t n, int32_t k) {
  return w.packed + g * w.packed_stride + static_cast<int64_t>(w.row_offset + n) * (k / 2);
}

__device__ __forceinline__ const uint8_t* scale_group(const Nvfp4DeviceWeights& w, int32_t g,
                                                      int32_t n, int32_t kb, int32_t blocks) {
  return w.scales + g * w.scale_stride +
         moe::scale_offset(w.layout, static_cast<std::size_t>(w.row_offset + n),
                           static_cast<std::size_t>(kb), static_cast<std::size_t>(blocks));
}

template <class C, bool kSwiGLU>
__device__ __forceinline__ void load_stage(const KernelArgs& ka, const TileRows& t, int32_t n0,
                                           int32_t kt, uint8_t* stage) {
  using S = Smem<C, kSwiGLU>;
  const W4A16GemmArgs& g = ka.g;
  const int tid = static_cast<int>(threadIdx.x);
  const int32_t k0 = kt * kBK;
  // A: BM rows x 8 chunks of 8 bf16.
  __nv_bfloat16* a_s = reinterpret_cast<__nv_bfloat16*>(stage);
  for (int c = tid; c < C::BM * 8; c += C::kThreads) {
    const int r = c >> 3, cc = c & 7;
    const bool valid = r < t.valid && k0 + cc * 8 < g.k;
    const int64_t row = t.row0 + (r < t.valid ? r : 0);
    const int64_t src_row = g.a_rows != nullptr ? g.a_rows[row] : row;
    const __nv_bfloat16* src = g.a + src_row * g.lda + (valid ? k0 + cc * 8 : 0);
    cp_async(a_s + r * kAStride + cc * 8, src, 16, valid);
  }
  // B: packed rows, 32 bytes per row per stage; rows [0, BN) from b0, [BN, 2 BN) from b1.
  uint8_t* b_s = stage + S::kABytes;
  const int chunk = ka.plan.b_chunk;
  const int per_row = 32 / chunk;
  for (int c = tid; c < S::kBRows * per_row; c += C::kThreads) {
    const int r = c / per_row, part = c % per_row;
    const Nvfp4DeviceWeights& w = (kSwiGLU && r >= C::BN) ? g.b1 : g.b0;
    const int32_t n = n0 + (r % C::BN);
    const bool valid = n < g.n && k0 + part * (chunk * 2) < g.k;
    const uint8_t* src = weight_row(w, t.group, valid ? n : 0, g.k) + (valid ? k0 / 2 + part * chunk : 0);
    cp_async(b_s + r * kBStride + part * chunk, src, chunk, valid);
  }
  // Scales: 4 consecutive blocks (one per k-step) per row.
  uint32_t* s_s = reinterpret_cast<uint32_t*>(stage + S::kABytes + S::kBBytes);
  const int32_t blocks = g.k / nvfp4::kBlockSize;
  const int32_t kb = kt * 4;
  for (int r = tid; r < S::kBRows; r += C::kThreads) {
    const Nvfp4DeviceWeights& w = (kSwiGLU && r >= C::BN) ? g.b1 : g.b0;
    const int32_t n = n0 + (r % C::BN);
    const bool valid = n < g.n;
    if (ka.plan.scales_async) {
      cp_async(s_s + r, scale_group(w, t.group, valid ? n : 0, kb, blocks), 4, valid);
    } else {
      // Row-major scales with K % 64 != 0 are not 4-byte aligned: plain byte loads (small shapes).
      uint32_t v = 0;
      if (valid) {
        const uint8_t* src = scale_group(w, t.group, n, kb, blocks);
        for (int b = 0; b < 4; ++b) {
          if (kb + b < blocks) v |= static_cast<uint32_t>(ldg(src + b)) << (8 * b);
        }
      }
      s_s[r] = v;
    }
  }
}

template <class C, bool kSwiGLU>
__device__ __forceinline__ void compute_stage(const uint8_t* stage, int warp_m0, int warp_n0,
                                              float (&acc)[kSwiGLU ? 2 : 1][C::MI][C::NI][4]) {
  using S = Smem<C, kSwiGLU>;
  constexpr int kOps = kSwiGLU ? 2 : 1;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const __nv_bfloat16* a_s = reinterpret_cast<const __nv_bfloat16*>(stage);
  const uint8_t* b_s = stage + S::kABytes;
  const uint32_t* s_s = reinterpret_cast<const uint32_t*>(stage + S::kABytes + S::kBBytes);
  const int q = lane & 3;
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t a[C::MI][4];
#pragma unroll
    for (int mi = 0; mi < C::MI; ++mi) {
      ldmatrix_a(a[mi], a_s + (warp_m0 + mi * 16) * kAStride + ks * 16, kAStride);
    }
#pragma unroll
    for (int o = 0; o < kOps; ++o) {
#pragma unroll
      for (int ni = 0; ni < C::NI; ++ni) {
        const int r = o * C::BN + warp_n0 + ni * 8 + (lane >> 2);
        // Bytes 8 ks + q (k = 16 ks + 2q, +1) and 8 ks + 4 + q (k = 16 ks + 8 + 2q, +1): the
        // B fragment of mma.m16n8k16 (b0 = k 2q, 2q+1; b1 = k 2q+8, 2q+9; column lane / 4).
        const uint2 words = *reinterpret_cast<const uint2*>(b_s + r * kBStride + ks * 8);
        const uint32_t codes = ((words.x >> (8 * q)) & 0xFFu) | (((words.y >> (8 * q)) & 0xFFu) << 8);
        uint32_t b0, b1;
        e2m1x4_to_bf16x4(codes, b0, b1);
        const uint32_t sf = e4m3_to_bf16(static_cast<uint8_t>(s_s[r] >> (8 * ks)));
        const uint32_t sf2 = sf | (sf << 16);
        b0 = bf16x2_mul(b0, sf2);
        b1 = bf16x2_mul(b1, sf2);
#pragma unroll
        for (int mi = 0; mi < C::MI; ++mi) mma_bf16(acc[o][mi][ni], a[mi], b0, b1);
      }
    }
  }
}

__device__ __forceinline__ void store_pair(__nv_bfloat16* out, int64_t ldo, int64_t row,
                                           int32_t col, int32_t n, float v0, float v1, bool pairs) {
  __nv_bfloat16* p = out + row * ldo + col;
  if (pairs && col + 1 < n) {
    store_bf16x2(p, v0, v1);
  } else {
    if (col < n) store_bf16(p, v0);
    if (col + 1 < n) store_bf16(p + 1, v1);
  }
}

// The whole kernel: a persistent loop over this CTA's tiles. `smem` is the dynamic shared
// memory (Smem<C, kSwiGLU>::kBytes, 16-byte aligned).
template <class C, bool kSwiGLU>
__device__ __forceinline__ void gemm_body(const KernelArgs& ka, uint8_t* smem) {
  using S = Smem<C, kSwiGLU>;
  constexpr int kOps = kSwiGLU ? 2 : 1;
  const W4A16GemmArgs& g = ka.g;
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int warp_m0 = (warp / C::WN) * (C::BM / C::WM);
  const int warp_n0 = (warp % C::WN) * (C::BN / C::WN);
  const bool grouped = g.tiles.tile_group != nullptr;
  const int32_t m_tiles =
      grouped ? *g.tiles.num_tiles : static_cast<int32_t>((g.rows + C::BM - 1) / C::BM);
  const int64_t total = static_cast<int64_t>(m_tiles) * ka.plan.n_tiles;

  for (int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const int32_t nt = static_cast<int32_t>(tile % ka.plan.n_tiles);
    const int32_t mt = static_cast<int32_t>(tile / ka.plan.n_tiles);
    TileRows t;
    int64_t end;
    if (grouped) {
      t.group = g.tiles.tile_group[mt];
      t.row0 = g.tiles.tile_row0[mt];
      end = g.tiles.group_offsets[t.group + 1];
    } else {
      t.group = 0;
      t.row0 = static_cast<int64_t>(mt) * C::BM;
      end = g.rows;
    }
    t.valid = static_cast<int32_t>(end - t.row0 < C::BM ? end - t.row0 : C::BM);
    const int32_t n0 = nt * C::BN;

    float acc[kOps][C::MI][C::NI][4];
#pragma unroll
    for (int o = 0; o < kOps; ++o)
#pragma unroll
      for (int mi = 0; mi < C::MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < C::NI; ++ni)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[o][mi][ni][i] = 0.0f;

    const int32_t k_tiles = ka.plan.k_tiles;
#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < k_tiles) load_stage<C, kSwiGLU>(ka, t, n0, s, smem + s * S::kStageBytes);
      cp_async_commit();
    }
    for (int32_t kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      const int32_t next = kt + C::STAGES - 1;
      if (next < k_tiles) {
        load_stage<C, kSwiGLU>(ka, t, n0, next, smem + (next % C::STAGES) * S::kStageBytes);
      }
      cp_async_commit();
      compute_stage<C, kSwiGLU>(smem + (kt % C::STAGES) * S::kStageBytes, warp_m0, warp_n0, acc);
    }
    cp_async_wait<0>();
    __syncthreads();  // the next tile's prologue overwrites the stages

    // Epilogue: global scales, SwiGLU, bf16 stores of the valid rows and columns.
    const float s0 = ldg(g.b0.global_scale + static_cast<int64_t>(t.group) * g.b0.global_stride);
    const float s1 =
        kSwiGLU ? ldg(g.b1.global_scale + static_cast<int64_t>(t.group) * g.b1.global_stride) : 0.0f;
#pragma unroll
    for (int mi = 0; mi < C::MI; ++mi) {
#pragma unroll
      for (int ni = 0; ni < C::NI; ++ni) {
        const int32_t col = n0 + warp_n0 + ni * 8 + 2 * (lane & 3);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = warp_m0 + mi * 16 + (lane >> 2) + 8 * h;
          if (r >= t.valid) continue;
          float v[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            const float x0 = __fmul_rn(acc[0][mi][ni][2 * h + i], s0);
            if constexpr (kSwiGLU) {
              v[i] = math::swiglu(x0, __fmul_rn(acc[kOps - 1][mi][ni][2 * h + i], s1));
            } else {
              v[i] = x0;
            }
          }
          store_pair(g.out, g.ldo, t.row0 + r, col, g.n, v[0], v[1], ka.plan.out_pairs);
        }
      }
    }
  }
}

}  // namespace qwen35_trt::kernels::moe_detail::w4a16
