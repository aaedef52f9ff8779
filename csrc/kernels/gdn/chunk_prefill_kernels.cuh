// GatedDeltaNet chunked prefill (chunk 64, WY/UT form) on tensor cores (mma.sync m16n8k16 bf16,
// fp32 accumulation, ldmatrix fragments, cp.async copies; the sm_80 instruction family, so every
// target). Contract in qwen35_trt/kernels/gdn.h and docs/ops.md; the math is that of
// chunk_gated_delta_rule in ops/gated_delta_rule.py.
//
// Per sequence and value head, a chunk of C = 64 tokens with cumulative log decay c (c_last: of the
// chunk's last token) and the state S_c at the chunk's start:
//   A    = strict_lower(beta_i (k_i . k_j) exp(c_i - c_j)),   T = (I + A)^-1
//   Tu   = T diag(beta),   Tw = T diag(beta exp(c)),   Aqk = lower(q_i . k_j exp(c_i - c_j))
//   W    = Tw K,   U = Tu V,   Kd = diag(exp(c_last - c)) K        (all independent of S)
//   V'   = U - W S_c                 (the WY form of the per-token corrections)
//   S_c+1 = exp(c_last) S_c + Kd^T V'
//   O    = diag(exp(c)) Q S_c + Aqk V'
// Four kernels per call:
//   1. plan: chunk offsets of every sequence (prefix sum of ceil(len / 64)) and device-side checks
//      of cu_seqlens and slots; the result goes to the workspace error word, and the other
//      kernels do nothing when it is set;
//   2. transform (grid: chunks x heads, fully parallel): gates, cumulative decay, q/k L2 norm,
//      K K^T and Q K^T on tensor cores, the 64 x 64 unit-lower-triangular inverse in fp32 (16 x 16
//      diagonal blocks by forward substitution, then the off-diagonal blocks), then W and U on
//      tensor cores; writes -W and Kd ([64][dk] bf16, the layouts the later kernels copy as they
//      are), Aqk, U (bf16), c and exp(c_last) (fp32) to the workspace. k is normalised here only,
//      once per (chunk, value head);
//   3. state pass (grid: 32-column value slices x heads x sequences): walks the sequence's chunks
//      in order with its fp32 state slice [dk, 32] in the MMA accumulators, and does only what
//      depends on the state: V' = U + (-W) S and S <- exp(c_last) S + Kd^T V', 2 dk x 32 x 64
//      multiply-adds per chunk. The next chunk's -W, Kd and U (cp.async, double-buffered in shared
//      memory) load while the current chunk computes; U enters the accumulators through an MMA
//      with the identity; fragments come from ldmatrix (.trans for the B operands S, U and V' and
//      for Kd^T, so nothing is transposed through shared memory) and S and V' are stored with
//      stmatrix. Two barriers per chunk: S (bf16) written / read by every warp, and
//      V' likewise. It writes each chunk's starting state S_c (bf16) to the workspace and V' over
//      U; reads the slot's state first and writes it back last;
//   4. output (grid: chunks x heads, fully parallel): O = diag(exp(c)) Qn S_c + Aqk V', 32 value
//      columns at a time; it normalises its q rows itself (the transform's function, the same
//      bits), which costs less than storing and reading Qn.
// Why per-chunk states instead of O inside the sequential loop: the loop is the only part of the
// prefill that cannot spread over chunks, so every multiply-add moved out of it (Q S and Aqk V'
// were half of its work) shortens the critical path, and the output kernel runs on all SMs at
// once. The price is workspace: S_c (bf16, dk x dv) and V' per (chunk, head), as FLA's
// chunk_gated_delta_rule_fwd_h stores h and v_new; -W and Kd are stored rather than recomputed so
// that the factors are computed once. At Qwen3.5-35B-A3B's shapes (Hv 32, dk = dv = 128) that is
// 88 KiB per (chunk, head): 352 MiB for 8192 tokens (128 chunks x 32 heads), against 97 MiB
// before (Tu, Tw, Aqk); U is overwritten in place by V' (each thread writes back only the
// elements it read) to keep it at that.
// Like FLA, the MMA operands (normalised q and k, Kd, the state, T, W, U, V') are rounded to bf16;
// all accumulation, the decays and the inverse are fp32.
//
// Kernel bodies (device code only; the launcher is chunk_prefill_mma.cu). Header-only so that
// csrc/tests/test_gdn_emulated.cpp can run this exact source on the CPU.
#pragma once

#include "gdn_common.cuh"

namespace qwen35_trt::kernels::gdn_chunk_impl {

using namespace gdn_detail;

constexpr int kThreads = 128;  // 4 warps
constexpr int kChunk = qwen35_trt::gdn::kChunkSize;
constexpr int kSlice = 32;       // value columns per state-pass block
constexpr int kLdc = kChunk + 8; // leading dimension of [.][64] bf16 tiles (conflict-free fragments)
constexpr int kLdf = kChunk + 1; // leading dimension of the fp32 64 x 64 tiles
static_assert(kChunk == 64, "the kernels below are written for 64-token chunks");

// ---------------------------------------------------------------------------------------------
// 1. Plan

constexpr int kPlanThreads = 256;

__global__ void __launch_bounds__(kPlanThreads) gdn_plan_kernel(GdnSequences s, Workspace ws) {
  __shared__ int32_t sums[kPlanThreads];
  __shared__ int32_t error;
  const int tid = threadIdx.x;
  if (tid == 0) error = 0;
  __syncthreads();
  const int64_t B = s.batch;
  const int64_t per = (B + kPlanThreads - 1) / kPlanThreads;
  const int64_t lo = tid * per, hi = lo + per < B ? lo + per : B;
  int32_t err = 0, local = 0;
  for (int64_t b = lo; b < hi; ++b) {
    const int32_t c0 = s.cu_seqlens[b], c1 = s.cu_seqlens[b + 1];
    if (c1 <= c0) err |= kGdnErrorCuSeqlens;
    else local += (c1 - c0 + kChunk - 1) / kChunk;
    if (s.slots[b] < 0 || s.slots[b] >= s.num_slots) err |= kGdnErrorSlot;
  }
  if (tid == 0 && (s.cu_seqlens[0] != 0 || s.cu_seqlens[B] != s.tokens)) err |= kGdnErrorCuSeqlens;
  if (err) atomicOr(&error, err);
  // Inclusive scan of the per-thread chunk counts (Hillis-Steele).
  sums[tid] = local;
  __syncthreads();
  for (int off = 1; off < kPlanThreads; off <<= 1) {
    const int32_t add = tid >= off ? sums[tid - off] : 0;
    __syncthreads();
    sums[tid] += add;
    __syncthreads();
  }
  int32_t running = sums[tid] - local;
  for (int64_t b = lo; b < hi; ++b) {
    ws.offsets[b] = running;
    const int32_t n = s.cu_seqlens[b + 1] - s.cu_seqlens[b];
    running += n > 0 ? (n + kChunk - 1) / kChunk : 0;
  }
  if (tid == kPlanThreads - 1) ws.offsets[B] = sums[tid];
  if (tid == 0) *ws.error = error;
}

// ---------------------------------------------------------------------------------------------
// Shared pieces of kernels 2 and 3

// Rows [0, 64) of a chunk of q or k for key head hk into dst [64][ld] (bf16): L2-normalised per
// row in fp32 (when l2norm), times `scale`; rows >= n are zero. Warp w handles rows w, w + 4, ...
// four at a time so that four loads are in flight.
template <int DK>
__device__ __forceinline__ void load_qk_chunk(bf16* dst, int ld, const bf16* src, int64_t stride, int64_t s, int n,
                                              int hk, bool l2norm, float scale, int warp, int lane) {
  constexpr int EPL = DK / 32;
  for (int i0 = warp; i0 < kChunk; i0 += 16) {
    float x[4][EPL];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = i0 + 4 * r;
      if (i < n) {
        load_bf16<EPL>(src + (s + i) * stride + hk * DK + lane * EPL, x[r]);
      } else {
#pragma unroll
        for (int e = 0; e < EPL; ++e) x[r][e] = 0.0f;
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      float ss = 0.0f;
#pragma unroll
      for (int e = 0; e < EPL; ++e) ss += x[r][e] * x[r][e];
      ss = warp_sum(ss);
      const float inv = l2norm ? 1.0f / sqrtf(ss + qwen35_trt::gdn::kL2NormEps) : 1.0f;
      bf16* d = dst + (i0 + 4 * r) * ld + lane * EPL;
      if constexpr (EPL == 1) {
        d[0] = __float2bfloat16_rn((x[r][0] * inv) * scale);
      } else {
#pragma unroll
        for (int e = 0; e < EPL; e += 2) {
          *reinterpret_cast<uint32_t*>(d + e) = pack_bf16x2((x[r][e] * inv) * scale, (x[r][e + 1] * inv) * scale);
        }
      }
    }
  }
}

// The chunk of sequence b that grid index `ci` (a global chunk number) belongs to.
__device__ __forceinline__ int64_t sequence_of_chunk(const int32_t* offsets, int64_t B, int64_t ci) {
  int64_t lo = 0, hi = B - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= ci) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Where the (chunk, value head) block blockIdx = (chunk ci, head h) works: its first token s, valid
// rows n (<= 64) and workspace matrix index. False: ci is past the last chunk.
struct ChunkCoords {
  int64_t s, mat;
  int n;
};
__device__ __forceinline__ bool chunk_coords(const GatedDeltaNetParams& p, const Workspace& ws, ChunkCoords& c) {
  const int64_t B = p.seqs.batch, ci = blockIdx.x;
  if (ci >= ws.offsets[B]) return false;
  const int64_t b = sequence_of_chunk(ws.offsets, B, ci);
  c.s = p.seqs.cu_seqlens[b] + (ci - ws.offsets[b]) * kChunk;
  const int64_t left = p.seqs.cu_seqlens[b + 1] - c.s;
  c.n = left < kChunk ? static_cast<int>(left) : kChunk;
  c.mat = ci * p.num_v_heads + blockIdx.y;
  return true;
}

// ---------------------------------------------------------------------------------------------
// 2. Transform: one block per (chunk, value head)

template <int DK>
struct TransformSmem {
  static constexpr int kLdk = DK + 8;
  // [Kn | Qn | Tf | g, c, beta, beta exp(c) | Af | Xt]; Tu / Tw (bf16) reuse Af + Xt once the
  // inverse is done, and the V column blocks reuse Qn once Q K^T is done.
  static constexpr std::size_t kQK = 2 * kChunk * kLdk * sizeof(bf16);
  static constexpr std::size_t kT = kChunk * kLdf * sizeof(float);
  static constexpr std::size_t kVec = 4 * kChunk * sizeof(float);
  static constexpr std::size_t kA = kChunk * kLdf * sizeof(float);
  static constexpr std::size_t kX = 3 * 16 * 17 * sizeof(float);
  static constexpr std::size_t kBytes = kQK + kT + kVec + kA + kX;
  static_assert(2 * kChunk * kLdc * sizeof(bf16) <= kA + kX, "Tu and Tw fit where A and Xt were");
  static_assert(kChunk * (kSlice + 8) * sizeof(bf16) <= kChunk * kLdk * sizeof(bf16), "a V block fits in Qn");
};

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_chunk_transform_kernel(GatedDeltaNetParams p, Workspace ws) {
  using L = TransformSmem<DK>;
  constexpr int LDK = L::kLdk;
  constexpr int LDV = kSlice + 8;
  ChunkCoords cc;
  if (*ws.error || !chunk_coords(p, ws, cc)) return;
  const int h = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t s = cc.s, mat = cc.mat;
  const int n = cc.n;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  const int64_t DV = p.head_v_dim;

  QWEN35_DYNAMIC_SMEM(smem);
  bf16* Kn = reinterpret_cast<bf16*>(smem);
  bf16* Qn = Kn + kChunk * LDK;
  bf16* Vs = Qn;  // V column blocks, once Q K^T is done
  float* Tf = reinterpret_cast<float*>(smem + L::kQK);
  float* graw = Tf + kChunk * kLdf;
  float* gc = graw + kChunk;
  float* bs = gc + kChunk;
  float* bw = bs + kChunk;
  float* Af = bw + kChunk;
  float* Xt = Af + kChunk * kLdf;  // [3][16][17]
  bf16* TuS = reinterpret_cast<bf16*>(Af);  // Tu, Tw [64][kLdc] once the inverse is done
  bf16* TwS = TuS + kChunk * kLdc;

  if (tid < kChunk) {
    float g = 0.0f, beta = 0.0f;  // padding rows: no decay, no write
    if (tid < n) {
      g = qwen35_trt::gdn::gate_log_decay(__bfloat162float(p.a[(s + tid) * p.a_stride + h]), p.A_log[h], p.dt_bias[h]);
      beta = qwen35_trt::gdn::gate_beta(__bfloat162float(p.b[(s + tid) * p.b_stride + h]), true);
    }
    graw[tid] = g;
    bs[tid] = beta;
  }
  load_qk_chunk<DK>(Kn, LDK, p.k, p.k_stride, s, n, hk, p.use_qk_l2norm, 1.0f, warp, lane);
  load_qk_chunk<DK>(Qn, LDK, p.q, p.q_stride, s, n, hk, p.use_qk_l2norm, p.scale, warp, lane);
  for (int x = tid; x < kChunk * kLdf; x += kThreads) Tf[x] = 0.0f;
  __syncthreads();
  if (tid < kChunk) {
    float c = 0.0f;  // sequential, in the CPU reference's order
    for (int j = 0; j <= tid; ++j) c += graw[j];
    gc[tid] = c;
    bw[tid] = bs[tid] * expf(c);
  }
  __syncthreads();

  // K K^T and Q K^T: warp w computes rows [16 w, 16 w + 16) x all 64 columns.
  {
    float kk[1][8][4], qk[1][8][4];
    zero_tile(kk);
    zero_tile(qk);
    mma_tile<1, 8>(kk, Kn, LDK, 16 * warp, Kn, LDK, 0, DK, lane);
    mma_tile<1, 8>(qk, Qn, LDK, 16 * warp, Kn, LDK, 0, DK, lane);
    bf16* aqk = ws.aqk + mat * kChunk * kChunk;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = 16 * warp + acc_row(0, 2 * half, lane);
        float vq[2];
#pragma unroll
        for (int d = 0; d < 2; ++d) {
          const int e = 2 * half + d;
          const int j = acc_col(nt, e, lane);
          // exp(c_i - c_j) only where it is used: above the diagonal it can overflow.
          Af[i * kLdf + j] = j < i ? bs[i] * kk[0][nt][e] * expf(gc[i] - gc[j]) : 0.0f;
          vq[d] = j <= i ? qk[0][nt][e] * expf(gc[i] - gc[j]) : 0.0f;
        }
        *reinterpret_cast<uint32_t*>(aqk + i * kChunk + acc_col(nt, 2 * half, lane)) = pack_bf16x2(vq[0], vq[1]);
      }
    }
  }
  // diag(exp(c_last - c)) Kn (the state update's keys), [64][dk].
  {
    const float c_last = gc[kChunk - 1];  // padding rows have g = 0, so this is c of the last token
    bf16* kdst = ws.kdec + mat * kChunk * DK;
    for (int x = tid; x < kChunk * DK / 8; x += kThreads) {
      const int i = x / (DK / 8), d = 8 * (x % (DK / 8));
      const float f = expf(c_last - gc[i]);
      float kv[8];
      load_bf16<8>(Kn + i * LDK + d, kv);
      uint4 out;
      out.x = pack_bf16x2(kv[0] * f, kv[1] * f);
      out.y = pack_bf16x2(kv[2] * f, kv[3] * f);
      out.z = pack_bf16x2(kv[4] * f, kv[5] * f);
      out.w = pack_bf16x2(kv[6] * f, kv[7] * f);
      *reinterpret_cast<uint4*>(kdst + i * DK + d) = out;
    }
    if (tid < kChunk) ws.gcum[mat * kChunk + tid] = gc[tid];
    if (tid == 0) ws.decay[mat] = expf(c_last);
  }
  __syncthreads();

  // T = (I + A)^-1, unit lower triangular, in fp32.
  if (lane < 16) {
    // Diagonal block w by forward substitution; lane c owns column c of the block.
    const int o = 16 * warp, c = lane;
    float col[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      float v = i == c ? 1.0f : 0.0f;
#pragma unroll
      for (int j = 0; j < i; ++j) v -= Af[(o + i) * kLdf + o + j] * col[j];
      col[i] = v;
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) Tf[(o + i) * kLdf + o + c] = col[i];
  }
  __syncthreads();
  // Off-diagonal blocks by distance d from the diagonal: T_IJ = -T_II sum_{K=J}^{I-1} A_IK T_KJ.
  for (int d = 1; d < 4; ++d) {
    const int blocks = 4 - d;
    for (int x = tid; x < blocks * 256; x += kThreads) {
      const int I = d + x / 256, J = I - d, r = (x / 16) % 16, c = x % 16;
      float acc = 0.0f;
      for (int K = J; K < I; ++K)
#pragma unroll
        for (int m = 0; m < 16; ++m) acc += Af[(16 * I + r) * kLdf + 16 * K + m] * Tf[(16 * K + m) * kLdf + 16 * J + c];
      Xt[(x / 256) * 272 + r * 17 + c] = acc;
    }
    __syncthreads();
    for (int x = tid; x < blocks * 256; x += kThreads) {
      const int I = d + x / 256, J = I - d, r = (x / 16) % 16, c = x % 16;
      float acc = 0.0f;
      for (int m = 0; m <= r; ++m) acc += Tf[(16 * I + r) * kLdf + 16 * I + m] * Xt[(x / 256) * 272 + m * 17 + c];
      Tf[(16 * I + r) * kLdf + 16 * J + c] = -acc;
    }
    __syncthreads();
  }

  // Tu = T diag(beta), Tw = T diag(beta exp(c)) as bf16 MMA operands (over A and Xt).
  for (int x = tid; x < kChunk * kChunk / 2; x += kThreads) {
    const int i = x / (kChunk / 2), j = 2 * (x % (kChunk / 2));
    const float t0 = Tf[i * kLdf + j], t1 = Tf[i * kLdf + j + 1];
    *reinterpret_cast<uint32_t*>(TuS + i * kLdc + j) = pack_bf16x2(t0 * bs[j], t1 * bs[j + 1]);
    *reinterpret_cast<uint32_t*>(TwS + i * kLdc + j) = pack_bf16x2(t0 * bw[j], t1 * bw[j + 1]);
  }
  __syncthreads();

  // -W = -Tw Kn [64][dk], stored negated so that the state pass starts its accumulators at U and
  // adds (-W) S. Warp w: rows [16 w, 16 w + 16).
  {
    float w[1][DK / 8][4];
    zero_tile(w);
    mma_tile_ldsm<1, DK / 8>(w, TwS, kLdc, 16 * warp, Kn, LDK, 0, kChunk, lane);
    bf16* dst = ws.wneg + (mat * kChunk + 16 * warp) * DK;
    for_each_acc_pair<1, DK / 8>(lane, [&](int, int nt, int half, int row, int col) {
      *reinterpret_cast<uint32_t*>(dst + row * DK + col) = pack_bf16x2(-w[0][nt][2 * half], -w[0][nt][2 * half + 1]);
    });
  }

  // U = Tu V [64][dv], 32 value columns at a time through Vs (rows >= n are zero).
  // Thread tid loads rows tid / 4 + 32 j of each block at column 8 (tid % 4) (as the output
  // kernel's copies) and stores its accumulator rows: pointers fixed per kernel, plus c0.
  constexpr int kRowsPerStep = kThreads / (kSlice / 8);
  const int prow = tid / (kSlice / 8), pcol = 8 * (tid % (kSlice / 8));
  const bf16* vsrc = p.v + (s + prow) * p.v_stride + h * DV + pcol;
  const int64_t vstep = kRowsPerStep * p.v_stride;
  bf16* const vs_dst = Vs + prow * LDV + pcol;
  bf16* urow[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    urow[half] = ws.uv + mat * kChunk * DV + (16 * warp + acc_row(0, 2 * half, lane)) * DV + acc_col(0, 0, lane);
  }
  for (int64_t c0 = 0; c0 < DV; c0 += kSlice) {
#pragma unroll
    for (int j = 0; j < kChunk / kRowsPerStep; ++j) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (prow + j * kRowsPerStep < n) v = *reinterpret_cast<const uint4*>(vsrc + j * vstep + c0);
      *reinterpret_cast<uint4*>(vs_dst + j * kRowsPerStep * LDV) = v;
    }
    __syncthreads();
    float u[1][4][4];
    zero_tile(u);
    mma_tile_ldsm<1, 4>(u, TuS, kLdc, 16 * warp, Vs, LDV, 0, kChunk, lane);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        *reinterpret_cast<uint32_t*>(urow[half] + c0 + 8 * nt) = pack_bf16x2(u[0][nt][2 * half], u[0][nt][2 * half + 1]);
      }
    __syncthreads();  // the next block overwrites Vs
  }
}

// ---------------------------------------------------------------------------------------------
// 3. State pass: one block per (32-column value slice, value head, sequence)

template <int DK>
struct StateSmem {
  static constexpr int kLdk = DK + 8;       // -W and the decayed keys, [64][kLdk], double-buffered
  static constexpr int kLds = kSlice + 8;   // U [64][kLds] (double-buffered), S [dk][kLds], V' [64][kLds]
  static constexpr std::size_t kTile = kChunk * kLdk;
  static constexpr std::size_t kUTile = kChunk * kLds;
  static constexpr std::size_t kBf16 = 4 * kTile + 2 * kUTile + DK * kLds + kChunk * kLds;
  static constexpr std::size_t kBytes = kBf16 * sizeof(bf16);
};

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_chunk_state_kernel(GatedDeltaNetParams p, Workspace ws) {
  using L = StateSmem<DK>;
  constexpr int LDK = L::kLdk;
  constexpr int LDS = L::kLds;
  constexpr int MS = DK / 64;        // 16-row tiles of the state per warp
  constexpr int ROWS = DK / 4;       // state rows per warp
  constexpr int KPIECES = kChunk * DK / 8 / kThreads;  // 16-byte pieces of -W (and of Kd) per thread
  constexpr int SPIECES = DK * kSlice / 8 / kThreads;  // of the state slice, contiguous in one row
  constexpr int UPIECES = kChunk * kSlice / 8 / kThreads;  // of U and V', likewise
  static_assert(KPIECES * kThreads * 8 == kChunk * DK && SPIECES * kThreads * 8 == DK * kSlice &&
                    UPIECES * kThreads * 8 == kChunk * kSlice,
                "whole 16-byte pieces per thread");
  if (*ws.error) return;
  const int sv = blockIdx.x, h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t slot = p.seqs.slots[b];
  const int64_t first_chunk = ws.offsets[b], chunks = ws.offsets[b + 1] - first_chunk;
  const int64_t DV = p.head_v_dim;
  const int64_t col0 = static_cast<int64_t>(sv) * kSlice;

  QWEN35_DYNAMIC_SMEM(smem);
  bf16* Wb = reinterpret_cast<bf16*>(smem);  // [2][64][LDK]: -W of this chunk and the next
  bf16* Kb = Wb + 2 * L::kTile;              // [2][64][LDK]: diag(exp(c_last - c)) K, likewise
  bf16* Ub = Kb + 2 * L::kTile;              // [2][64][LDS]: U, likewise
  bf16* Sb = Ub + 2 * L::kUTile;             // [dk][LDS]: the state at the chunk's start (bf16)
  bf16* Vb = Sb + DK * LDS;                  // [64][LDS]: V'

  // Per-thread pieces, fixed for the whole pass: the pointers step by one chunk of the sequence
  // (num_v_heads matrices) per iteration. -W and Kd rows are contiguous in the workspace, so piece
  // `it` of thread tid is element 8 (tid + it kThreads); U, V' and the state are 32-column slices
  // of dv-wide rows, and a thread's pieces are adjacent in one row, so that each copy's address is
  // the thread's pointer plus an immediate.
  const int64_t m0 = first_chunk * p.num_v_heads + h;
  const int64_t step_k = static_cast<int64_t>(p.num_v_heads) * kChunk * DK;
  const int64_t step_v = static_cast<int64_t>(p.num_v_heads) * kChunk * DV;
  const int64_t step_s = static_cast<int64_t>(p.num_v_heads) * DK * DV;
  const bf16* wsrc = ws.wneg + m0 * kChunk * DK + 8 * tid;
  const bf16* ksrc = ws.kdec + m0 * kChunk * DK + 8 * tid;
  const int kdst = (tid / (DK / 8)) * LDK + 8 * (tid % (DK / 8));
  constexpr int kRowsPerPiece = kThreads / (DK / 8);
  const int urow = tid / (4 / UPIECES), ucol = 8 * (tid * UPIECES % 4);
  const int srow = tid / (4 / SPIECES), scol = 8 * (tid * SPIECES % 4);
  const bf16* usrc = ws.uv + m0 * kChunk * DV + urow * DV + col0 + ucol;
  bf16* vdst = ws.uv + m0 * kChunk * DV + urow * DV + col0 + ucol;
  bf16* sdst = ws.states + m0 * DK * DV + srow * DV + col0 + scol;
  const int uofs = urow * LDS + ucol, sofs = srow * LDS + scol;
  const float* dsrc = ws.decay + m0;

  // The next chunk's -W, Kd and U into buffer `buf`, 16 bytes per cp.async, without waiting.
  const auto prefetch = [&](int buf) {
    cp_async16_strided<KPIECES, kRowsPerPiece * LDK, kThreads * 8>(Wb + buf * L::kTile + kdst, wsrc);
    cp_async16_strided<KPIECES, kRowsPerPiece * LDK, kThreads * 8>(Kb + buf * L::kTile + kdst, ksrc);
    cp_async16_strided<UPIECES, 8, 8>(Ub + buf * L::kUTile + uofs, usrc);
    cp_async_commit();
    wsrc += step_k;
    ksrc += step_k;
    usrc += step_v;
  };

  // The state slice S[dk, 32]: warp w owns rows [ROWS w, ROWS (w + 1)), as MMA accumulators.
  float* state = p.state_pool + ((slot * p.num_v_heads + h) * DK) * DV + col0;
  float S[MS][4][4];
  float* const warp_state = state + ROWS * warp * DV;
  if (reads_initial_state(p.seqs, b)) {
    for_each_acc_pair<MS, 4>(lane, [&](int m, int nt, int half, int row, int col) {
      const float2 v = *reinterpret_cast<const float2*>(warp_state + row * DV + col);
      S[m][nt][2 * half] = v.x;
      S[m][nt][2 * half + 1] = v.y;
    });
  } else {
    zero_tile(S);
  }

  // The identity as an A fragment over k in [16 w, 16 w + 16): an MMA with it adds this warp's
  // rows of U (a B operand in shared memory) to the accumulators, cheaper than unpacking U.
  uint32_t eye[4];
  {
    const int g = lane >> 2, t = lane & 3;
    eye[0] = (g == 2 * t ? 0x3F80u : 0u) | (g == 2 * t + 1 ? 0x3F800000u : 0u);
    eye[1] = 0u;
    eye[2] = 0u;
    eye[3] = eye[0];
  }

  float decay = 1.0f;
  if (chunks > 0) {
    prefetch(0);
    decay = *dsrc;
  }
  for (int64_t c = 0; c < chunks; ++c) {
    const int buf = static_cast<int>(c & 1);

    // ---- S (bf16) to shared memory in the accumulator layout; the MMAs read it with ldmatrix.trans
#pragma unroll
    for (int mt = 0; mt < MS; ++mt) {
      stsm_acc2(Sb, LDS, ROWS * warp + 16 * mt, 0, S[mt][0], S[mt][1], lane);
      stsm_acc2(Sb, LDS, ROWS * warp + 16 * mt, 16, S[mt][2], S[mt][3], lane);
    }
    cp_async_wait_all();
    // Sb, and this chunk's -W, Kd and U, complete; every warp is past the previous chunk, so the
    // other buffers and Vb are free.
    __syncthreads();
    const float d = decay;
    if (c + 1 < chunks) {
      prefetch(buf ^ 1);
      dsrc += p.num_v_heads;
      decay = *dsrc;
    }

    // The chunk's starting state (bf16) for the output kernel.
#pragma unroll
    for (int it = 0; it < SPIECES; ++it) {
      *reinterpret_cast<uint4*>(sdst + 8 * it) = *reinterpret_cast<const uint4*>(Sb + sofs + 8 * it);
    }
    sdst += step_s;

    // ---- V' = U + (-W) S, rows [16 w, 16 w + 16), to Vb
    float vp[1][4][4];
    {
      uint32_t bu[2][2][2];
      ldsm_b2_trans(bu[0], Ub + buf * L::kUTile, LDS, 16 * warp, 0, lane);
      ldsm_b2_trans(bu[1], Ub + buf * L::kUTile, LDS, 16 * warp, 16, lane);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) mma_bf16_16x8x16_zero(vp[0][nt], eye, bu[nt >> 1][nt & 1]);
    }
    mma_tile_ldsm<1, 4>(vp, Wb + buf * L::kTile, LDK, 16 * warp, Sb, LDS, 0, DK, lane);
    stsm_acc2(Vb, LDS, 16 * warp, 0, vp[0][0], vp[0][1], lane);
    stsm_acc2(Vb, LDS, 16 * warp, 16, vp[0][2], vp[0][3], lane);
    __syncthreads();  // Vb complete

    // V' over U in the workspace (its U was copied to shared memory before the barrier above).
#pragma unroll
    for (int it = 0; it < UPIECES; ++it) {
      *reinterpret_cast<uint4*>(vdst + 8 * it) = *reinterpret_cast<const uint4*>(Vb + uofs + 8 * it);
    }
    vdst += step_v;

    // ---- S = exp(c_last) S + (diag(exp(c_last - c)) K)^T V'
#pragma unroll
    for (int mt = 0; mt < MS; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) S[mt][nt][e] *= d;
    mma_tile_ldsm<MS, 4, true>(S, Kb + buf * L::kTile, LDK, ROWS * warp, Vb, LDS, 0, kChunk, lane);
  }

  for_each_acc_pair<MS, 4>(lane, [&](int m, int nt, int half, int row, int col) {
    *reinterpret_cast<float2*>(warp_state + row * DV + col) = make_float2(S[m][nt][2 * half], S[m][nt][2 * half + 1]);
  });
}

// ---------------------------------------------------------------------------------------------
// 4. Output: one block per (chunk, value head), 32 value columns at a time

template <int DK>
struct OutputSmem {
  static constexpr int kLdk = DK + 8;
  static constexpr int kLds = kSlice + 8;
  static constexpr std::size_t kBf16 = kChunk * kLdk + kChunk * kLdc + DK * kLds + kChunk * kLds;
  static constexpr std::size_t kBytes = kBf16 * sizeof(bf16) + kChunk * sizeof(float);
};

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_chunk_output_kernel(GatedDeltaNetParams p, Workspace ws) {
  using L = OutputSmem<DK>;
  constexpr int LDK = L::kLdk;
  constexpr int LDS = L::kLds;
  ChunkCoords cc;
  if (*ws.error || !chunk_coords(p, ws, cc)) return;
  const int h = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t s = cc.s, mat = cc.mat;
  const int n = cc.n;
  const int64_t DV = p.head_v_dim;

  QWEN35_DYNAMIC_SMEM(smem);
  bf16* Qs = reinterpret_cast<bf16*>(smem);  // [64][LDK]
  bf16* Aq = Qs + kChunk * LDK;              // [64][kLdc]
  bf16* Ss = Aq + kChunk * kLdc;             // [dk][LDS]: the chunk's starting state, 32 columns
  bf16* Vp = Ss + DK * LDS;                  // [64][LDS]: V', 32 columns
  float* gc = reinterpret_cast<float*>(Vp + kChunk * LDS);

  const bf16* aqk = ws.aqk + mat * kChunk * kChunk;
  for (int x = tid; x < kChunk * kChunk / 8; x += kThreads) {
    const int i = x / (kChunk / 8), d = 8 * (x % (kChunk / 8));
    cp_async16(Aq + i * kLdc + d, aqk + i * kChunk + d);
  }
  if (tid < kChunk) gc[tid] = ws.gcum[mat * kChunk + tid];
  // Qn as the transform computed it (the same function of q: the same bits), while Aqk arrives.
  load_qk_chunk<DK>(Qs, LDK, p.q, p.q_stride, s, n, h / (p.num_v_heads / p.num_k_heads), p.use_qk_l2norm, p.scale,
                    warp, lane);

  // A column block's copies: piece x = tid + j kThreads of a [rows][32] block is row x / 4, column
  // 8 (x % 4), so thread tid's pieces are rows tid / 4 + 32 j at one column: its source and
  // destination are fixed per kernel and step by 32 rows per piece and by 32 columns per block.
  constexpr int kRowsPerStep = kThreads / (kSlice / 8);
  static_assert(DK % kRowsPerStep == 0 && kChunk % kRowsPerStep == 0, "whole pieces per thread");
  const int prow = tid / (kSlice / 8), pcol = 8 * (tid % (kSlice / 8));
  const bf16* st = ws.states + mat * DK * DV + prow * DV + pcol;
  const bf16* vp = ws.uv + mat * kChunk * DV + prow * DV + pcol;
  const int64_t src_step = kRowsPerStep * DV;
  bf16* const ss_dst = Ss + prow * LDS + pcol;
  bf16* const vp_dst = Vp + prow * LDS + pcol;
  for (int64_t c0 = 0; c0 < DV; c0 += kSlice) {
#pragma unroll
    for (int j = 0; j < DK / kRowsPerStep; ++j) cp_async16(ss_dst + j * kRowsPerStep * LDS, st + j * src_step + c0);
#pragma unroll
    for (int j = 0; j < kChunk / kRowsPerStep; ++j) cp_async16(vp_dst + j * kRowsPerStep * LDS, vp + j * src_step + c0);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    // O = diag(exp(c)) Qn S + Aqk V', rows [16 w, 16 w + 16).
    float o[1][4][4];
    zero_tile(o);
    mma_tile_ldsm<1, 4>(o, Qs, LDK, 16 * warp, Ss, LDS, 0, DK, lane);
    const float e0 = expf(gc[16 * warp + (lane >> 2)]), e1 = expf(gc[16 * warp + (lane >> 2) + 8]);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      o[0][nt][0] *= e0;
      o[0][nt][1] *= e0;
      o[0][nt][2] *= e1;
      o[0][nt][3] *= e1;
    }
    mma_tile_ldsm<1, 4>(o, Aq, kLdc, 16 * warp, Vp, LDS, 0, kChunk, lane);
    for_each_acc_pair<1, 4>(lane, [&](int, int nt, int half, int row, int col) {
      row += 16 * warp;
      if (row < n) {
        *reinterpret_cast<uint32_t*>(p.o + (s + row) * p.o_stride + h * DV + c0 + col) =
            pack_bf16x2(o[0][nt][2 * half], o[0][nt][2 * half + 1]);
      }
    });
    __syncthreads();  // the next column block overwrites Ss and Vp
  }
}

// Grids: the plan is one block of kPlanThreads; the transform and the output kernel cover (chunk
// upper bound, value heads); the state pass (32-column value slices, value heads, sequences).
inline dim3 transform_grid(const GatedDeltaNetParams& p, const Workspace& ws) {
  return dim3(static_cast<unsigned>(ws.max_chunks), static_cast<unsigned>(p.num_v_heads));
}
inline dim3 output_grid(const GatedDeltaNetParams& p, const Workspace& ws) { return transform_grid(p, ws); }
inline dim3 state_grid(const GatedDeltaNetParams& p) {
  return dim3(static_cast<unsigned>(p.head_v_dim / kSlice), static_cast<unsigned>(p.num_v_heads),
              static_cast<unsigned>(p.seqs.batch));
}

}  // namespace qwen35_trt::kernels::gdn_chunk_impl
