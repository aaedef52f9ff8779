// GatedDeltaNet, token by token, with the state on chip: the decode kernel. Contract in
// qwen35_trt/kernels/gdn.h and docs/ops.md.
//
// Decode is memory-bound on the fp32 state (dk x dv x 4 bytes per sequence and head, 64 KiB at
// 128 x 128): each block reads its slice of the state once, runs every token of its sequence
// (one for decode; any number is correct) and writes the slice back once.
// Block = 128 threads on (value-column slice of 32, value head, sequence). Thread (rg, c4) owns
// state rows rg, rg + 16, ... (dk / 16 rows) and columns 4 c4 .. 4 c4 + 3 of the slice, so a
// warp's loads of one row group are 4 rows x 128 contiguous bytes. The two reductions over dk
// (S^T k and S^T q) go through warp shuffles and one shared-memory step across the 4 warps.
//
// Kernel body (device code only; the launcher is recurrent_decode.cu). Header-only so that
// csrc/tests/test_gdn_emulated.cpp can run this exact source on the CPU.
#pragma once

#include "gdn_common.cuh"

namespace qwen35_trt::kernels::gdn_recurrent_impl {

using namespace gdn_detail;

constexpr int kThreads = 128;
constexpr int kSlice = 32;     // value columns per block
constexpr int kRowGroups = 16; // kThreads / (kSlice / 4)

template <int DK>
__global__ void __launch_bounds__(kThreads) gdn_recurrent_kernel(GatedDeltaNetParams p) {
  constexpr int RPT = DK / kRowGroups;  // state rows per thread
  constexpr int EPL = DK / 32;          // q/k elements per lane when a warp normalises a row
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int c4 = tid & 7, rg = tid >> 3;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const SeqRange r = seq_range(p.seqs, b);
  const int64_t slot = slot_of(p.seqs, b);
  if (r.end <= r.start || slot < 0) return;

  const int64_t DV = p.head_v_dim;
  const int hk = h / (p.num_v_heads / p.num_k_heads);
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kSlice + 4 * c4;
  float* state = p.state_pool + ((slot * p.num_v_heads + h) * DK) * DV + col;

  __shared__ float qs[DK], ks[DK];
  __shared__ float red[2][4][kSlice];

  float S[RPT][4];
  if (reads_initial_state(p.seqs, b)) {
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const float4 v = *reinterpret_cast<const float4*>(state + (rg + kRowGroups * i) * DV);
      S[i][0] = v.x;
      S[i][1] = v.y;
      S[i][2] = v.z;
      S[i][3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < RPT; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) S[i][j] = 0.0f;
  }
  const float A_log = p.A_log[h], dt_bias = p.dt_bias[h];

  for (int64_t t = r.start; t < r.end; ++t) {
    // Warp 0 normalises k, warp 1 normalises and scales q (fp32, as the CPU reference).
    if (warp < 2) {
      const bf16* src = (warp == 0 ? p.k + t * p.k_stride : p.q + t * p.q_stride) + hk * DK + lane * EPL;
      float x[EPL];
      load_bf16<EPL>(src, x);
      float ss = 0.0f;
#pragma unroll
      for (int e = 0; e < EPL; ++e) ss += x[e] * x[e];
      ss = warp_sum(ss);
      const float inv = p.use_qk_l2norm ? 1.0f / sqrtf(ss + qwen35_trt::gdn::kL2NormEps) : 1.0f;
      float* dst = warp == 0 ? ks : qs;
#pragma unroll
      for (int e = 0; e < EPL; ++e) dst[lane * EPL + e] = warp == 0 ? x[e] * inv : (x[e] * inv) * p.scale;
    }
    const float g = qwen35_trt::gdn::gate_log_decay(__bfloat162float(p.a[t * p.a_stride + h]), A_log, dt_bias);
    const float beta = qwen35_trt::gdn::gate_beta(__bfloat162float(p.b[t * p.b_stride + h]), true);
    float vv[4];
    load_bf16<4>(p.v + t * p.v_stride + h * DV + col, vv);
    __syncthreads();

    // pred = S^T k after the decay
    const float decay = expf(g);
    float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const float kr = ks[rg + kRowGroups * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        S[i][j] *= decay;
        part[j] = fmaf(S[i][j], kr, part[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      part[j] += __shfl_xor_sync(0xFFFFFFFFu, part[j], 8);
      part[j] += __shfl_xor_sync(0xFFFFFFFFu, part[j], 16);
    }
    if (lane < 8) {
#pragma unroll
      for (int j = 0; j < 4; ++j) red[0][warp][4 * c4 + j] = part[j];
    }
    __syncthreads();
    float u[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float pred = red[0][0][4 * c4 + j] + red[0][1][4 * c4 + j] + red[0][2][4 * c4 + j] + red[0][3][4 * c4 + j];
      u[j] = (vv[j] - pred) * beta;
    }

    // S += k u^T;  o = S^T q
#pragma unroll
    for (int j = 0; j < 4; ++j) part[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      const float kr = ks[rg + kRowGroups * i], qr = qs[rg + kRowGroups * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        S[i][j] = fmaf(kr, u[j], S[i][j]);
        part[j] = fmaf(S[i][j], qr, part[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      part[j] += __shfl_xor_sync(0xFFFFFFFFu, part[j], 8);
      part[j] += __shfl_xor_sync(0xFFFFFFFFu, part[j], 16);
    }
    if (lane < 8) {
#pragma unroll
      for (int j = 0; j < 4; ++j) red[1][warp][4 * c4 + j] = part[j];
    }
    __syncthreads();
    if (tid < 8) {
      float o[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) o[j] = red[1][0][4 * c4 + j] + red[1][1][4 * c4 + j] + red[1][2][4 * c4 + j] + red[1][3][4 * c4 + j];
      *reinterpret_cast<uint2*>(p.o + t * p.o_stride + h * DV + col) = make_uint2(pack_bf16x2(o[0], o[1]), pack_bf16x2(o[2], o[3]));
    }
    // The next token's writes to qs / ks / red come after its first barrier, which every thread
    // reaches only after its reads above.
  }

#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    *reinterpret_cast<float4*>(state + (rg + kRowGroups * i) * DV) = make_float4(S[i][0], S[i][1], S[i][2], S[i][3]);
  }
}

// Grid: (32-column value slices, value heads, sequences).
inline dim3 gdn_recurrent_grid(const GatedDeltaNetParams& p) {
  return dim3(static_cast<unsigned>(p.head_v_dim / kSlice), static_cast<unsigned>(p.num_v_heads),
              static_cast<unsigned>(p.seqs.batch));
}

}  // namespace qwen35_trt::kernels::gdn_recurrent_impl
