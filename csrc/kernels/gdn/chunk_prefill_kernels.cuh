// GatedDeltaNet chunked prefill (chunk 64, WY/UT form) on tensor cores (mma.sync m16n8k16 bf16,
// fp32 accumulation; the sm_80 instruction family, so every target). Contract in qwen35_trt/kernels/gdn.h and
// docs/ops.md; the math is that of chunk_gated_delta_rule in ops/gated_delta_rule.py.
//
// Per sequence and value head, a chunk of C = 64 tokens with cumulative log decay c:
//   A    = strict_lower(beta_i (k_i . k_j) exp(c_i - c_j)),   T = (I + A)^-1
//   Tu   = T diag(beta),   Tw = T diag(beta exp(c)),   Aqk = lower(q_i . k_j exp(c_i - c_j))
//   X    = K S                       (what the state predicts for each key)
//   V'   = Tu V - Tw X               (= U - W S, the WY form of the per-token corrections)
//   O    = diag(exp(c)) Q S + Aqk V'
//   S   <- exp(c_last) S + K^T diag(exp(c_last - c)) V'
// Three kernels per call:
//   1. plan: chunk offsets of every sequence (prefix sum of ceil(len / 64)) and device-side checks
//      of cu_seqlens and slots; the result goes to the workspace error word, and the next two
//      kernels do nothing when it is set;
//   2. transform (grid: chunks x heads, fully parallel): gates, cumulative decay, q/k L2 norm,
//      K K^T and Q K^T on tensor cores, the 64 x 64 unit-lower-triangular inverse in fp32 (16 x 16
//      diagonal blocks by forward substitution, then the off-diagonal blocks), and Tu, Tw, Aqk (bf16)
//      and c (fp32) to the workspace;
//   3. state pass (grid: 32-column value slices x heads x sequences): walks the sequence's chunks
//      in order with its fp32 state slice [dk, 32] in the MMA accumulators, computing X, V', O and
//      the state update on tensor cores; reads the slot's state first and writes it back last.
// Like FLA, the MMA operands (normalised q and k, the state, T, V') are rounded to bf16; all
// accumulation, the decays and the inverse are fp32.
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

// ---------------------------------------------------------------------------------------------
// 2. Transform: one block per (chunk, value head)

template <int DK>
struct TransformSmem {
  static constexpr int kLdk = DK + 8;
  static constexpr std::size_t kQK = 2 * kChunk * kLdk * sizeof(bf16);  // Kn, Qn; later the fp32 T
  static constexpr std::size_t kT = kChunk * kLdf * sizeof(float);
  static constexpr std::size_t kRegion0 = kQK > kT ? kQK : kT;
  static constexpr std::size_t kA = kChunk * kLdf * sizeof(float);
  static constexpr std::size_t kVec = 4 * kChunk * sizeof(float);  // g, c, beta, beta exp(c)
  static constexpr std::size_t kX = 3 * 16 * 17 * sizeof(float);
  static constexpr std::size_t kBytes = kRegion0 + kA + kVec + kX;
};

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_chunk_transform_kernel(GatedDeltaNetParams p, Workspace ws) {
  using L = TransformSmem<DK>;
  constexpr int LDK = L::kLdk;
  if (*ws.error) return;
  const int64_t B = p.seqs.batch;
  const int64_t ci = blockIdx.x;
  if (ci >= ws.offsets[B]) return;
  const int h = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t b = sequence_of_chunk(ws.offsets, B, ci);
  const int64_t s = p.seqs.cu_seqlens[b] + (ci - ws.offsets[b]) * kChunk;
  const int64_t left = p.seqs.cu_seqlens[b + 1] - s;
  const int n = left < kChunk ? static_cast<int>(left) : kChunk;
  const int hk = h / (p.num_v_heads / p.num_k_heads);

  QWEN35_DYNAMIC_SMEM(smem);
  bf16* Kn = reinterpret_cast<bf16*>(smem);
  bf16* Qn = Kn + kChunk * LDK;
  float* Tf = reinterpret_cast<float*>(smem);  // reuses the Kn / Qn region once they are consumed
  float* Af = reinterpret_cast<float*>(smem + L::kRegion0);
  float* graw = Af + kChunk * kLdf;
  float* gc = graw + kChunk;
  float* bs = gc + kChunk;
  float* bw = bs + kChunk;
  float* Xt = bw + kChunk;  // [3][16][17]

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
    bf16* aqk = ws.aqk + (ci * p.num_v_heads + h) * kChunk * kChunk;
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
  __syncthreads();  // Kn / Qn consumed: their region becomes Tf

  // T = (I + A)^-1, unit lower triangular, in fp32.
  for (int x = tid; x < kChunk * kLdf; x += kThreads) Tf[x] = 0.0f;
  __syncthreads();
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

  // Tu = T diag(beta), Tw = T diag(beta exp(c)), c.
  const int64_t mat = (ci * p.num_v_heads + h) * kChunk * kChunk;
  for (int x = tid; x < kChunk * kChunk / 2; x += kThreads) {
    const int i = x / (kChunk / 2), j = 2 * (x % (kChunk / 2));
    const float t0 = Tf[i * kLdf + j], t1 = Tf[i * kLdf + j + 1];
    *reinterpret_cast<uint32_t*>(ws.tu + mat + i * kChunk + j) = pack_bf16x2(t0 * bs[j], t1 * bs[j + 1]);
    *reinterpret_cast<uint32_t*>(ws.tw + mat + i * kChunk + j) = pack_bf16x2(t0 * bw[j], t1 * bw[j + 1]);
  }
  if (tid < kChunk) ws.gcum[(ci * p.num_v_heads + h) * kChunk + tid] = gc[tid];
}

// ---------------------------------------------------------------------------------------------
// 3. State pass: one block per (32-column value slice, value head, sequence)

template <int DK>
struct StateSmem {
  static constexpr int kLdk = DK + 8;
  static constexpr std::size_t kKn = kChunk * kLdk;   // elements (bf16)
  static constexpr std::size_t kQn = kChunk * kLdk;
  static constexpr std::size_t kKnT = DK * kLdc;
  static constexpr std::size_t kST = kSlice * kLdk;
  static constexpr std::size_t kSliceT = kSlice * kLdc;  // VT, XT, VpT, VsT
  static constexpr std::size_t kMat = kChunk * kLdc;     // Tu, Tw, Aqk
  static constexpr std::size_t kBf16 = kKn + kQn + kKnT + kST + 4 * kSliceT + 3 * kMat;
  static constexpr std::size_t kBytes = kBf16 * sizeof(bf16) + kChunk * sizeof(float);
};

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_chunk_state_kernel(GatedDeltaNetParams p, Workspace ws) {
  using L = StateSmem<DK>;
  constexpr int LDK = L::kLdk;
  constexpr int MS = DK / 64;        // 16-row tiles of the state per warp
  constexpr int ROWS = DK / 4;       // state rows per warp
  if (*ws.error) return;
  const int sv = blockIdx.x, h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t start = p.seqs.cu_seqlens[b], end = p.seqs.cu_seqlens[b + 1];
  const int64_t slot = p.seqs.slots[b];
  const int64_t first_chunk = ws.offsets[b], chunks = ws.offsets[b + 1] - first_chunk;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  const int64_t DV = p.head_v_dim;
  const int64_t col0 = static_cast<int64_t>(sv) * kSlice;

  QWEN35_DYNAMIC_SMEM(smem);
  bf16* Kn = reinterpret_cast<bf16*>(smem);
  bf16* Qn = Kn + L::kKn;
  bf16* KnT = Qn + L::kQn;
  bf16* ST = KnT + L::kKnT;
  bf16* VT = ST + L::kST;
  bf16* XT = VT + L::kSliceT;
  bf16* VpT = XT + L::kSliceT;
  bf16* VsT = VpT + L::kSliceT;
  bf16* Tu = VsT + L::kSliceT;
  bf16* Tw = Tu + L::kMat;
  bf16* Aq = Tw + L::kMat;
  float* gc = reinterpret_cast<float*>(Aq + L::kMat);

  // The state slice S[dk, 32]: warp w owns rows [ROWS w, ROWS (w + 1)), as MMA accumulators.
  float* state = p.state_pool + ((slot * p.num_v_heads + h) * DK) * DV + col0;
  float S[MS][4][4];
  if (reads_initial_state(p.seqs, b)) {
#pragma unroll
    for (int m = 0; m < MS; ++m)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = ROWS * warp + acc_row(m, 2 * half, lane), col = acc_col(nt, 0, lane);
          const float2 v = *reinterpret_cast<const float2*>(state + row * DV + col);
          S[m][nt][2 * half] = v.x;
          S[m][nt][2 * half + 1] = v.y;
        }
  } else {
    zero_tile(S);
  }

  float O[2][4][4];  // warps 2 and 3: output rows [32 (w - 2), 32 (w - 1))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t s = start + c * kChunk;
    const int n = end - s < kChunk ? static_cast<int>(end - s) : kChunk;
    const int64_t mat = ((first_chunk + c) * p.num_v_heads + h) * kChunk * kChunk;

    // ---- stage the chunk's operands in shared memory
    load_qk_chunk<DK>(Kn, LDK, p.k, p.k_stride, s, n, hk, p.use_qk_l2norm, 1.0f, warp, lane);
    load_qk_chunk<DK>(Qn, LDK, p.q, p.q_stride, s, n, hk, p.use_qk_l2norm, p.scale, warp, lane);
    {
      // V slice, transposed: VT[col][token]. Thread: token tid / 2, 16 columns.
      const int i = tid >> 1, half = tid & 1;
      float v[16];
      if (i < n) {
        const bf16* src = p.v + (s + i) * p.v_stride + h * DV + col0 + 16 * half;
        load_bf16<8>(src, v);
        load_bf16<8>(src + 8, v + 8);
      } else {
#pragma unroll
        for (int e = 0; e < 16; ++e) v[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 16; ++e) VT[(16 * half + e) * kLdc + i] = __float2bfloat16_rn(v[e]);
    }
    for (int x = tid; x < 3 * kChunk * 8; x += kThreads) {
      // Tu, Tw, Aqk: 64 rows x 8 uint4 each, into rows of kLdc elements (16-byte aligned).
      const int which = x / (kChunk * 8), row = (x / 8) % kChunk, part = x % 8;
      const bf16* src = (which == 0 ? ws.tu : which == 1 ? ws.tw : ws.aqk) + mat + row * kChunk + 8 * part;
      bf16* dst = (which == 0 ? Tu : which == 1 ? Tw : Aq) + row * kLdc + 8 * part;
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    }
    if (tid < kChunk) gc[tid] = ws.gcum[((first_chunk + c) * p.num_v_heads + h) * kChunk + tid];
    // The state as a bf16 MMA operand, transposed: ST[col][dk].
#pragma unroll
    for (int m = 0; m < MS; ++m)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          ST[acc_col(nt, e, lane) * LDK + ROWS * warp + acc_row(m, e, lane)] = __float2bfloat16_rn(S[m][nt][e]);
    __syncthreads();

    // KnT[dk][token] from Kn, 2 x 2 elements per step (32-bit loads and stores).
    for (int x = tid; x < (DK / 2) * (kChunk / 2); x += kThreads) {
      const int tp = x % (kChunk / 2), dp = x / (kChunk / 2);
      const __nv_bfloat162 r0 = *reinterpret_cast<const __nv_bfloat162*>(Kn + (2 * tp) * LDK + 2 * dp);
      const __nv_bfloat162 r1 = *reinterpret_cast<const __nv_bfloat162*>(Kn + (2 * tp + 1) * LDK + 2 * dp);
      *reinterpret_cast<__nv_bfloat162*>(KnT + (2 * dp) * kLdc + 2 * tp) = __halves2bfloat162(r0.x, r1.x);
      *reinterpret_cast<__nv_bfloat162*>(KnT + (2 * dp + 1) * kLdc + 2 * tp) = __halves2bfloat162(r0.y, r1.y);
    }

    // ---- phase A: X = K S (warps 0, 1) and O = diag(exp(c)) Q S (warps 2, 3), 32 rows each
    if (warp < 2) {
      float X[2][4][4];
      zero_tile(X);
      mma_tile<2, 4>(X, Kn, LDK, 32 * warp, ST, LDK, 0, DK, lane);
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            XT[acc_col(nt, e, lane) * kLdc + 32 * warp + acc_row(m, e, lane)] = __float2bfloat16_rn(X[m][nt][e]);
    } else {
      zero_tile(O);
      mma_tile<2, 4>(O, Qn, LDK, 32 * (warp - 2), ST, LDK, 0, DK, lane);
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) O[m][nt][e] *= expf(gc[32 * (warp - 2) + acc_row(m, e, lane)]);
    }
    __syncthreads();

    // ---- phase B: V' = Tu V - Tw X, rows [16 w, 16 w + 16); V' and diag(exp(c_last - c)) V' to smem
    const float c_last = gc[kChunk - 1];  // padding rows have g = 0, so this is c of the last token
    {
      float U[1][4][4], W[1][4][4];
      zero_tile(U);
      zero_tile(W);
      mma_tile<1, 4>(U, Tu, kLdc, 16 * warp, VT, kLdc, 0, kChunk, lane);
      mma_tile<1, 4>(W, Tw, kLdc, 16 * warp, XT, kLdc, 0, kChunk, lane);
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = 16 * warp + acc_row(0, e, lane), col = acc_col(nt, e, lane);
          const float vp = U[0][nt][e] - W[0][nt][e];
          VpT[col * kLdc + row] = __float2bfloat16_rn(vp);
          VsT[col * kLdc + row] = __float2bfloat16_rn(vp * expf(c_last - gc[row]));
        }
    }
    __syncthreads();

    // ---- phase C: O += Aqk V' (warps 2, 3) and S = exp(c_last) S + K^T V'' (all warps)
    if (warp >= 2) {
      mma_tile<2, 4>(O, Aq, kLdc, 32 * (warp - 2), VpT, kLdc, 0, kChunk, lane);
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int row = 32 * (warp - 2) + acc_row(m, 2 * half, lane);
            if (row < n) {
              *reinterpret_cast<uint32_t*>(p.o + (s + row) * p.o_stride + h * DV + col0 + acc_col(nt, 0, lane)) =
                  pack_bf16x2(O[m][nt][2 * half], O[m][nt][2 * half + 1]);
            }
          }
    }
    const float decay = expf(c_last);
#pragma unroll
    for (int m = 0; m < MS; ++m)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) S[m][nt][e] *= decay;
    mma_tile<MS, 4>(S, KnT, kLdc, ROWS * warp, VsT, kLdc, 0, kChunk, lane);
    __syncthreads();  // the next chunk overwrites the shared tiles
  }

#pragma unroll
  for (int m = 0; m < MS; ++m)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = ROWS * warp + acc_row(m, 2 * half, lane), col = acc_col(nt, 0, lane);
        *reinterpret_cast<float2*>(state + row * DV + col) = make_float2(S[m][nt][2 * half], S[m][nt][2 * half + 1]);
      }
}

// Grids: the plan is one block of kPlanThreads; the transform covers (chunk upper bound, value
// heads); the state pass (32-column value slices, value heads, sequences).
inline dim3 transform_grid(const GatedDeltaNetParams& p, const Workspace& ws) {
  return dim3(static_cast<unsigned>(ws.max_chunks), static_cast<unsigned>(p.num_v_heads));
}
inline dim3 state_grid(const GatedDeltaNetParams& p) {
  return dim3(static_cast<unsigned>(p.head_v_dim / kSlice), static_cast<unsigned>(p.num_v_heads),
              static_cast<unsigned>(p.seqs.batch));
}

}  // namespace qwen35_trt::kernels::gdn_chunk_impl
