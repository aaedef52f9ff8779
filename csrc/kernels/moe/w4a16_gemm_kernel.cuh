// Device code of the W4A16 grouped GEMM (launcher: grouped_gemm_w4a16_mma.cu; contract:
// W4A16GemmArgs in moe_internal.h). A header so that csrc/tests/test_moe_emulated.cpp can run the
// same source on the CPU through csrc/tests/simt_emulator.h (QWEN35_SIMT_EMULATION), where the
// cp.async copies become synchronous copies, ldmatrix reads its fragment directly and the MMA is
// reconstructed from the 32 lanes' fragments.
//
// Per CTA tile: BM rows x BN output columns (x 2 weight operands for SwiGLU), K in stages of 64
// fed by a cp.async pipeline. Weights stay packed in shared memory (32 bytes per row per stage);
// each thread converts exactly the codes its B fragments need into exact bf16 products code x
// block scale (Decode below: byte-permute tables for ModelOpt's order, shifts and masks for the
// W4A16 fragment layout the builder writes for sm_90 and sm_120 engines) and the per-expert
// global scale multiplies the fp32 sums in the epilogue. Each thread's copy sources are computed
// once per tile (TileCopies) and only advance by a constant stride per stage, so the k-loop holds
// no index arithmetic; the common shapes (K % 64 == 0, 16-byte weight rows, 4-byte scale groups)
// get a kernel without k bounds checks (kFast), the rest a checked one. The grid is persistent;
// tiles are (row tile, column tile) pairs, the row tiles coming from the device-side tile list,
// so no host synchronisation is ever needed.
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

// How a launch's weights are stored and decoded (Plan::fragments picks the kernel).
//   ModelOpt order (row-major or swizzled FP8 scales): per k-step, each lane picks its 4 codes out
//     of the row's 8 bytes and decodes them through byte-permute tables;
//   fragment layout (qwen35_trt/common/w4a16_fragments.h, UE5M3 scales): one 8-byte load gives a
//     lane its codes for all 4 k-steps of the stage, and a pair of codes becomes a bf16x2 by
//     shifts and masks. A row's last partial 64-code group (K % 64 != 0, checked kernel only) is
//     in ModelOpt order: that stage decodes as kFragmentsTail.
enum class Decode { kModelOpt, kFragments, kFragmentsTail };

template <int BM_, int BN_, int WM_, int WN_, int STAGES_, int MIN_CTAS_ = 1>
struct Config {
  static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_, STAGES = STAGES_;
  static constexpr int kMinCtas = MIN_CTAS_;  // __launch_bounds__ minimum CTAs per SM
  static constexpr int kThreads = WM * WN * 32;
  static constexpr int MI = BM / WM / 16;  // m16 fragments per warp
  static constexpr int NI = BN / WN / 8;   // n8 fragments per warp and operand
  static_assert(MI >= 1 && NI >= 1 && BM % (WM * 16) == 0 && BN % (WN * 8) == 0, "tile shape");
};

// Every configuration puts its warps side by side along N (WM = 1): each warp spans all BM rows,
// so each B fragment is dequantized by exactly one warp of the CTA, and the warp reuses it for
// BM / 16 MMAs (A comes through ldmatrix, which costs far less than a dequantization).
using SmallTile = Config<16, 32, 1, 4, 6, 6>;    // decode: many narrow tiles keep the SMs streaming
using SmallPlainTile = Config<16, 64, 1, 4, 6, 6>;  // decode without SwiGLU: the same weight rows per stage
using MediumTile = Config<64, 64, 1, 4, 4, 3>;
using LargeTile = Config<128, 64, 1, 8, 4, 2>;   // prefill: 128 registers, 2 CTAs per SM

template <class C, bool kSwiGLU, bool kFrag>
struct Smem {
  // Bytes per packed B row in shared memory: ModelOpt order 32 + 16 pad (a quad's 8-byte reads
  // of 8 rows hit distinct banks); fragment layout 32 (a half-warp's 8-byte reads of 4 rows cover
  // the 32 banks once).
  static constexpr int kBStride = kFrag ? 32 : 48;
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
  bool fast;             // K % 64 == 0, 16-byte aligned weight rows and 4-byte aligned scale
                         // groups: the kFast kernel (16-byte weight copies, 4-byte scale copies,
                         // no k bounds); otherwise 8-byte weight copies and byte-wise scales
  bool out_pairs;        // 4-byte aligned bf16x2 stores
  bool fragments;        // the weights are in the W4A16 fragment layout (every operand)
  int32_t full_k_tiles;  // K / 64: the stages whose codes are in fragment order
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
         (w.layout == ScaleLayout::kRowMajor || w.layout == ScaleLayout::kSwizzled128x4 ||
          w.layout == ScaleLayout::kW4A16Fragments);
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
  plan.fragments = g.b0.layout == ScaleLayout::kW4A16Fragments;
  if (g.swiglu && (g.b1.layout == ScaleLayout::kW4A16Fragments) != plan.fragments) return false;
  plan.k_tiles = (g.k + kBK - 1) / kBK;
  plan.full_k_tiles = g.k / kBK;
  plan.fast = wide && g.k % kBK == 0 && scales_aligned4(g.b0, g.k) &&
              (!g.swiglu || scales_aligned4(g.b1, g.k));
  plan.out_pairs = aligned_to(g.out, 4) && g.ldo % 2 == 0;
  return true;
}

template <class C>
inline int32_t n_tiles(const W4A16GemmArgs& g) { return (g.n + C::BN - 1) / C::BN; }

// --- the primitives, real or emulated ----------------------------------------------------------
#if defined(QWEN35_SIMT_EMULATION)

template <int kBytes>
inline void cp_async(void* dst, const void* src, uint32_t src_bytes) {
  std::memcpy(dst, src, src_bytes);
  std::memset(static_cast<uint8_t*>(dst) + src_bytes, 0, kBytes - src_bytes);
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
inline uint32_t bf16x2_mul_bcast(uint32_t a, uint32_t pair, bool high) {
  const uint32_t h = high ? pair >> 16 : pair & 0xFFFFu;
  return bf16x2_mul(a, h | (h << 16));
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
// Asynchronous global -> shared copy of kBytes = 16, 8 or 4 bytes, of which the first src_bytes
// (kBytes or 0) are read and the rest zero-filled (src unread at 0).
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, uint32_t src_bytes) {
  if constexpr (kBytes == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
  } else if constexpr (kBytes == 8) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
  } else {
    static_assert(kBytes == 4, "cp.async size");
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes));
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
// a times one half of `pair` in both lanes (`high` a constant after unrolling: the multiply's
// operand swizzle, no extra permute).
__device__ __forceinline__ uint32_t bf16x2_mul_bcast(uint32_t a, uint32_t pair, bool high) {
  __nv_bfloat162 x = *reinterpret_cast<__nv_bfloat162*>(&a);
  const __nv_bfloat162 p = *reinterpret_cast<__nv_bfloat162*>(&pair);
  x = __hmul2(x, high ? __high2bfloat162(p) : __low2bfloat162(p));
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

// This thread's share of every stage's copies for one tile, computed once before its k-loop:
// each job's source at k-tile 0, what a k-tile adds to it, and how many bytes it reads (0 for
// rows and columns outside the operands: the copy zero-fills). Job j of a kind is chunk
// tid + j * kThreads, so a warp's copies stay contiguous in global memory.
//   A: BM rows x 8 chunks of 8 bf16 (16 bytes);
//   B: kBRows packed rows, rows [0, BN) from b0 and [BN, 2 BN) from b1, 32 bytes per row per
//      stage in chunks of kBChunk bytes;
//   scales: one 4-byte group per B row (the blocks of the stage's 4 k-steps).
template <class C, bool kSwiGLU, bool kFast, bool kFrag>
struct TileCopies {
  using S = Smem<C, kSwiGLU, kFrag>;
  static constexpr int kBChunk = kFast ? 16 : 8;
  static constexpr int kBPerRow = 32 / kBChunk;
  static constexpr int kAChunks = C::BM * 8, kBChunks = S::kBRows * kBPerRow, kSRows = S::kBRows;
  static constexpr int jobs(int n) { return (n + C::kThreads - 1) / C::kThreads; }
  static constexpr int kAJobs = jobs(kAChunks), kBJobs = jobs(kBChunks), kSJobs = jobs(kSRows);
  // Either every thread has the same jobs, or one job for the first `chunks` threads.
  __device__ __forceinline__ static bool exists(int chunks, int tid) { return chunks >= C::kThreads || tid < chunks; }
  static_assert(kAChunks % C::kThreads == 0 && kBChunks % C::kThreads % 32 == 0 &&
                    kSRows % C::kThreads % 32 == 0 && (kBChunks % C::kThreads == 0 || kBJobs == 1) &&
                    (kSRows % C::kThreads == 0 || kSJobs == 1),
                "copy jobs per thread");

  const uint8_t* a[kAJobs];
  const uint8_t* b[kBJobs];
  const uint8_t* s[kSJobs];
  uint32_t a_bytes[kAJobs], b_bytes[kBJobs], s_bytes[kSJobs];
  uint32_t s_step[kSJobs];  // bytes between k-tiles' scale groups: 4 row-major, 512 swizzled
  int32_t a_klim, b_klim;   // (checked kernel) a chunk is inside K when k0 < its limit

  __device__ __forceinline__ TileCopies(const W4A16GemmArgs& g, const TileRows& t, int32_t n0) {
    const int tid = static_cast<int>(threadIdx.x);
#pragma unroll
    for (int j = 0; j < kAJobs; ++j) {
      const int c = tid + j * C::kThreads, r = c >> 3;
      const int64_t row = t.row0 + (r < t.valid ? r : 0);
      const int64_t src_row = g.a_rows != nullptr ? g.a_rows[row] : row;
      a[j] = reinterpret_cast<const uint8_t*>(g.a + src_row * g.lda + (c & 7) * 8);
      a_bytes[j] = r < t.valid ? 16u : 0u;
    }
    a_klim = g.k - (tid & 7) * 8;
#pragma unroll
    for (int j = 0; j < kBJobs; ++j) {
      const int c = tid + j * C::kThreads, r = c / kBPerRow;
      const Nvfp4DeviceWeights& w = (kSwiGLU && r >= C::BN) ? g.b1 : g.b0;
      const int32_t n = n0 + (r % C::BN);
      const bool ok = n < g.n;
      b[j] = w.packed + t.group * w.packed_stride +
             static_cast<int64_t>(w.row_offset + (ok ? n : 0)) * (g.k / 2) + (c % kBPerRow) * kBChunk;
      b_bytes[j] = ok ? static_cast<uint32_t>(kBChunk) : 0u;
    }
    b_klim = g.k - (tid % kBPerRow) * kBChunk * 2;
    const int32_t blocks = g.k / nvfp4::kBlockSize;
#pragma unroll
    for (int j = 0; j < kSJobs; ++j) {
      const int r = tid + j * C::kThreads;
      const Nvfp4DeviceWeights& w = (kSwiGLU && r >= C::BN) ? g.b1 : g.b0;
      const int32_t n = n0 + (r % C::BN);
      const bool ok = n < g.n;
      s[j] = w.scales + t.group * w.scale_stride +
             moe::scale_offset(w.layout, static_cast<std::size_t>(w.row_offset + (ok ? n : 0)), 0,
                               static_cast<std::size_t>(blocks));
      s_step[j] = w.layout == ScaleLayout::kSwizzled128x4 ? 512u : 4u;
      s_bytes[j] = ok ? 4u : 0u;
    }
  }

  // Issues k-tile kt's copies into `stage`.
  __device__ __forceinline__ void load(const W4A16GemmArgs& g, int32_t kt, uint8_t* stage) const {
    const int tid = static_cast<int>(threadIdx.x);
    const uint32_t k0 = static_cast<uint32_t>(kt) * kBK;
    uint8_t* a_s = stage + (tid >> 3) * (kAStride * 2) + (tid & 7) * 16;
#pragma unroll
    for (int j = 0; j < kAJobs; ++j) {
      uint8_t* dst = a_s + j * (C::kThreads / 8) * (kAStride * 2);
      if constexpr (kFast) {
        cp_async<16>(dst, a[j] + k0 * 2, a_bytes[j]);
      } else {
        const bool in = static_cast<int32_t>(k0) < a_klim && a_bytes[j] != 0;
        cp_async<16>(dst, in ? a[j] + k0 * 2 : a[j], in ? 16u : 0u);
      }
    }
    uint8_t* b_s = stage + S::kABytes + (tid / kBPerRow) * S::kBStride + (tid % kBPerRow) * kBChunk;
#pragma unroll
    for (int j = 0; j < kBJobs && exists(kBChunks, tid); ++j) {
      uint8_t* dst = b_s + j * (C::kThreads / kBPerRow) * S::kBStride;
      if constexpr (kFast) {
        cp_async<kBChunk>(dst, b[j] + k0 / 2, b_bytes[j]);
      } else {
        const bool in = static_cast<int32_t>(k0) < b_klim && b_bytes[j] != 0;
        cp_async<kBChunk>(dst, in ? b[j] + k0 / 2 : b[j], in ? static_cast<uint32_t>(kBChunk) : 0u);
      }
    }
    uint32_t* s_s = reinterpret_cast<uint32_t*>(stage + S::kABytes + S::kBBytes) + tid;
#pragma unroll
    for (int j = 0; j < kSJobs && exists(kSRows, tid); ++j) {
      const uint8_t* src = s[j] + static_cast<uint32_t>(kt) * s_step[j];
      if constexpr (kFast) {
        cp_async<4>(s_s + j * C::kThreads, src, s_bytes[j]);
      } else {
        // Row-major scales with K % 64 != 0 are not 4-byte aligned: byte loads, blocks past K zero
        // (their codes are zero-filled, so any scale a zero byte decodes to gives 0).
        const int32_t blocks = g.k / nvfp4::kBlockSize, kb = kt * 4;
        uint32_t v = 0;
        if (s_bytes[j] != 0) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if (kb + i < blocks) v |= static_cast<uint32_t>(ldg(src + i)) << (8 * i);
          }
        }
        s_s[j * C::kThreads] = v;
      }
    }
  }
};

// One stage's MMAs. Per k-step, each B fragment (b0, b1) is 4 E2M1 codes of one weight row times
// the row's block scale, as two exact bf16x2 products (e2m1_bf16.h):
//   kModelOpt: one byte permute picks the lane's codes out of the row's 8 bytes of the k-step,
//     decoded times 2^120 through byte-permute tables, times the FP8 scale's bits as scale x
//     2^-120: code x scale;
//   kFragments: the lane's 8 bytes of the stage hold its codes of all 4 k-steps in fragment
//     order (2 k-steps per word), each pair of codes decoded by a shift and a mask as code x
//     2^-126, times the UE5M3 scale as scale x 2^119: code x scale x 2^-7 (the epilogue restores
//     2^7);
//   kFragmentsTail: the same products from codes in ModelOpt order (a row's partial last group).
// The scales of the stage's 4 k-steps are converted once per row.
template <class C, bool kSwiGLU, Decode kDecode>
__device__ __forceinline__ void compute_stage(const uint8_t* stage, int warp_m0, int warp_n0,
                                              float (&acc)[kSwiGLU ? 2 : 1][C::MI][C::NI][4]) {
  constexpr bool kFrag = kDecode != Decode::kModelOpt;
  using S = Smem<C, kSwiGLU, kFrag>;
  constexpr int kOps = kSwiGLU ? 2 : 1;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const __nv_bfloat16* a_s = reinterpret_cast<const __nv_bfloat16*>(stage);
  const uint8_t* b_s = stage + S::kABytes;
  const uint32_t* s_s = reinterpret_cast<const uint32_t*>(stage + S::kABytes + S::kBBytes);
  // ModelOpt order: bytes 8 ks + q (k = 16 ks + 2q, +1) and 8 ks + 4 + q (k = 16 ks + 8 + 2q, +1)
  // of the row are the B fragment of mma.m16n8k16 (b0 = k 2q, 2q+1; b1 = k 2q+8, 2q+9; column
  // lane / 4). Fragment order: bytes 8 q .. 8 q + 7 of the row's stage.
  const uint32_t q = static_cast<uint32_t>(lane & 3), code_sel = q | ((q + 4) << 4);
  uint32_t sf[kOps][C::NI][2];  // scales as bf16 pairs: [0] k-steps 0, 2; [1] 1, 3
  uint2 frag[kOps][C::NI];      // kFragments: the lane's codes of the stage
#pragma unroll
  for (int o = 0; o < kOps; ++o) {
#pragma unroll
    for (int ni = 0; ni < C::NI; ++ni) {
      const int r = o * C::BN + warp_n0 + ni * 8 + (lane >> 2);
      if constexpr (kFrag) {
        ue5m3x4_to_bf16x4_x2p119(s_s[r], sf[o][ni][0], sf[o][ni][1]);
      } else {
        e4m3x4_to_bf16x4_x2m120(s_s[r], sf[o][ni][0], sf[o][ni][1]);
      }
      if constexpr (kDecode == Decode::kFragments) {
        frag[o][ni] = *reinterpret_cast<const uint2*>(b_s + r * S::kBStride + 8 * q);
      }
    }
  }
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t b[kOps][C::NI][2];
#pragma unroll
    for (int o = 0; o < kOps; ++o) {
#pragma unroll
      for (int ni = 0; ni < C::NI; ++ni) {
        const int r = o * C::BN + warp_n0 + ni * 8 + (lane >> 2);
        if constexpr (kDecode == Decode::kFragments) {
          const uint32_t w = ks < 2 ? frag[o][ni].x : frag[o][ni].y;
          b[o][ni][0] = e2m1_fragment_pair_x2m126(w, 2 * (ks % 2));
          b[o][ni][1] = e2m1_fragment_pair_x2m126(w, 2 * (ks % 2) + 1);
        } else {
          const uint2 words = *reinterpret_cast<const uint2*>(b_s + r * S::kBStride + ks * 8);
          const uint32_t codes = byte_perm(words.x, words.y, code_sel);
          if constexpr (kDecode == Decode::kModelOpt) {
            e2m1x4_to_bf16x4_x120(codes, b[o][ni][0], b[o][ni][1]);
          } else {
            b[o][ni][0] = e2m1x2_to_bf16x2_x2m126(codes & 0xFFu);
            b[o][ni][1] = e2m1x2_to_bf16x2_x2m126(codes >> 8);
          }
        }
        b[o][ni][0] = bf16x2_mul_bcast(b[o][ni][0], sf[o][ni][ks % 2], ks >= 2);
        b[o][ni][1] = bf16x2_mul_bcast(b[o][ni][1], sf[o][ni][ks % 2], ks >= 2);
      }
    }
    // One A fragment live at a time: a warp spans all BM rows, so A is the larger operand.
#pragma unroll
    for (int mi = 0; mi < C::MI; ++mi) {
      uint32_t a[4];
      ldmatrix_a(a, a_s + (warp_m0 + mi * 16) * kAStride + ks * 16, kAStride);
#pragma unroll
      for (int o = 0; o < kOps; ++o)
#pragma unroll
        for (int ni = 0; ni < C::NI; ++ni) mma_bf16(acc[o][mi][ni], a, b[o][ni][0], b[o][ni][1]);
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

// The whole kernel for one plan kind: a persistent loop over this CTA's tiles. `smem` is the
// dynamic shared memory (Smem<C, kSwiGLU, kFrag>::kBytes, 16-byte aligned).
template <class C, bool kSwiGLU, bool kFast, bool kFrag>
__device__ __forceinline__ void gemm_tiles(const KernelArgs& ka, uint8_t* smem) {
  using S = Smem<C, kSwiGLU, kFrag>;
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

    const TileCopies<C, kSwiGLU, kFast, kFrag> copies(g, t, n0);
    const int32_t k_tiles = ka.plan.k_tiles;
#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < k_tiles) copies.load(g, s, smem + s * S::kStageBytes);
      cp_async_commit();
    }
    // Ring positions of the stage computed and of the stage loaded in iteration kt.
    int read = 0, write = C::STAGES - 1;
    for (int32_t kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      if (kt + C::STAGES - 1 < k_tiles) copies.load(g, kt + C::STAGES - 1, smem + write * S::kStageBytes);
      cp_async_commit();
      const uint8_t* stage = smem + read * S::kStageBytes;
      if constexpr (!kFrag) {
        compute_stage<C, kSwiGLU, Decode::kModelOpt>(stage, warp_m0, warp_n0, acc);
      } else if (kFast || kt < ka.plan.full_k_tiles) {
        compute_stage<C, kSwiGLU, Decode::kFragments>(stage, warp_m0, warp_n0, acc);
      } else {
        compute_stage<C, kSwiGLU, Decode::kFragmentsTail>(stage, warp_m0, warp_n0, acc);
      }
      read = read == C::STAGES - 1 ? 0 : read + 1;
      write = write == C::STAGES - 1 ? 0 : write + 1;
    }
    cp_async_wait<0>();
    __syncthreads();  // the next tile's prologue overwrites the stages

    // Epilogue: global scales (times 2^7 for the fragment layout's products: exact, so the same
    // single rounding as scaling the sums first), SwiGLU, bf16 stores of the valid rows and columns.
    constexpr float kRestore = kFrag ? static_cast<float>(1 << -nvfp4::kFragmentProductExp) : 1.0f;
    const float s0 = kRestore * ldg(g.b0.global_scale + static_cast<int64_t>(t.group) * g.b0.global_stride);
    const float s1 =
        kSwiGLU ? kRestore * ldg(g.b1.global_scale + static_cast<int64_t>(t.group) * g.b1.global_stride) : 0.0f;
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

// The kernel body for any plan (the emulated test's entry point; the launcher instantiates
// gemm_tiles per plan kind instead).
template <class C, bool kSwiGLU>
__device__ __forceinline__ void gemm_body(const KernelArgs& ka, uint8_t* smem) {
  if (ka.plan.fragments) {
    if (ka.plan.fast) {
      gemm_tiles<C, kSwiGLU, true, true>(ka, smem);
    } else {
      gemm_tiles<C, kSwiGLU, false, true>(ka, smem);
    }
  } else if (ka.plan.fast) {
    gemm_tiles<C, kSwiGLU, true, false>(ka, smem);
  } else {
    gemm_tiles<C, kSwiGLU, false, false>(ka, smem);
  }
}

// Dynamic shared memory of a launch of this plan.
template <class C, bool kSwiGLU>
inline int smem_bytes(const Plan& plan) {
  return plan.fragments ? Smem<C, kSwiGLU, true>::kBytes : Smem<C, kSwiGLU, false>::kBytes;
}

}  // namespace qwen35_trt::kernels::moe_detail::w4a16
