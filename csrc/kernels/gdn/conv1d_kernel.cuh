// CausalConv1d (depthwise, causal, + SiLU) over a varlen batch with a conv-state slot pool;
// contract in qwen35_trt/kernels/gdn.h and docs/ops.md.
//
// Work split: a thread owns 8 consecutive channels (16-byte loads and stores) and walks a tile of
// kTileTokens tokens of one sequence, keeping the last W-1 inputs in registers. Tiles are aligned
// to the sequence start, so only tile 0 of a sequence reads the slot's stored inputs (the others
// start from rows of x). Tile 0 also writes the slot afterwards, from its own registers and from
// x: the one reader of a slot is also its one writer, so no other block can race with it.
// Memory traffic: x read about once (the W-1 row overlap between tiles is 3 / 64), y written once.
// The sum runs in the CPU reference's order without FMA contraction, so results match it except
// where the device's expf differs from the host's in the last bit.
//
// Kernel body (device code only; the launcher is conv1d.cu). Header-only so that
// csrc/tests/test_gdn_emulated.cpp can run this exact source on the CPU.
#pragma once

#include "gdn_common.cuh"

namespace qwen35_trt::kernels::gdn_conv_impl {

using namespace gdn_detail;

constexpr int kThreads = 128;
constexpr int kChannelsPerThread = 8;
constexpr int kTileTokens = 64;  // must be >= kMaxConvWidth - 1 (see above)
static_assert(kTileTokens >= qwen35_trt::gdn::kMaxConvWidth - 1, "tile 0 must be the only reader of the slot");

template <int W>
__global__ void __launch_bounds__(kThreads) causal_conv1d_kernel(CausalConv1dParams p) {
  constexpr int H = W - 1;  // stored history per channel
  constexpr int N = kChannelsPerThread;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * N;
  const int64_t b = blockIdx.z;
  if (c0 >= p.channels) return;
  const SeqRange r = seq_range(p.seqs, b);
  const int64_t slot = slot_of(p.seqs, b);
  if (r.end <= r.start || slot < 0) return;
  const int64_t C = p.channels;

  float w[N][W];
  {
    float flat[N * W];
    const bf16* wp = p.weight + c0 * W;  // 8 channels x W taps, contiguous, 16-byte aligned
#pragma unroll
    for (int i = 0; i < W; ++i) load_bf16<8>(wp + 8 * i, flat + 8 * i);
#pragma unroll
    for (int c = 0; c < N; ++c)
#pragma unroll
      for (int j = 0; j < W; ++j) w[c][j] = flat[c * W + j];
  }
  bf16* state = p.state_pool + (slot * C + c0) * H;  // [8 channels][H], 16-byte aligned

  for (int64_t tile = blockIdx.y; r.start + tile * kTileTokens < r.end; tile += gridDim.y) {
    const int64_t t0 = r.start + tile * kTileTokens;
    const int64_t t1 = t0 + kTileTokens < r.end ? t0 + kTileTokens : r.end;
    float hist[H][N];   // hist[j] = input at t - H + j for the next token t
    float init[H][N] = {};  // tile 0: the slot's stored inputs (oldest first)
    if (tile == 0) {
      if (reads_initial_state(p.seqs, b)) {
        float flat[N * H];
#pragma unroll
        for (int i = 0; i < H; ++i) load_bf16<8>(state + 8 * i, flat + 8 * i);
#pragma unroll
        for (int c = 0; c < N; ++c)
#pragma unroll
          for (int j = 0; j < H; ++j) init[j][c] = flat[c * H + j];
      }
#pragma unroll
      for (int j = 0; j < H; ++j)
#pragma unroll
        for (int c = 0; c < N; ++c) hist[j][c] = init[j][c];
    } else {
#pragma unroll
      for (int j = 0; j < H; ++j) load_bf16<8>(p.x + (t0 - H + j) * p.x_stride + c0, hist[j]);
    }

    // One row in flight ahead of the arithmetic, so each thread keeps two loads outstanding.
    float xnext[N];
    load_bf16<8>(p.x + t0 * p.x_stride + c0, xnext);
    for (int64_t t = t0; t < t1; ++t) {
      float xv[N];
#pragma unroll
      for (int c = 0; c < N; ++c) xv[c] = xnext[c];
      if (t + 1 < t1) load_bf16<8>(p.x + (t + 1) * p.x_stride + c0, xnext);
      uint32_t out[N / 2];
#pragma unroll
      for (int c = 0; c < N; c += 2) {
        float y2[2];
#pragma unroll
        for (int d = 0; d < 2; ++d) {
          float acc = 0.0f;
#pragma unroll
          for (int j = 0; j < H; ++j) acc = __fadd_rn(acc, __fmul_rn(w[c + d][j], hist[j][c + d]));
          acc = __fadd_rn(acc, __fmul_rn(w[c + d][H], xv[c + d]));
          y2[d] = qwen35_trt::gdn::conv_epilogue(acc, true);
        }
        out[c / 2] = pack_bf16x2(y2[0], y2[1]);
      }
      *reinterpret_cast<uint4*>(p.y + t * p.y_stride + c0) = make_uint4(out[0], out[1], out[2], out[3]);
#pragma unroll
      for (int c = 0; c < N; ++c) {
#pragma unroll
        for (int j = 0; j + 1 < H; ++j) hist[j][c] = hist[j + 1][c];
        hist[H - 1][c] = xv[c];
      }
    }

    if (tile == 0) {
      // The slot's new content: inputs end - H .. end - 1, from x or (short sequences) from init.
      float flat[N * H];
#pragma unroll
      for (int j = 0; j < H; ++j) {
        const int64_t pos = r.end - H + j;  // absolute token index; < start means stored input
        float vals[N] = {};
        if (pos >= r.start) {
          load_bf16<8>(p.x + pos * p.x_stride + c0, vals);
        } else {
          const int64_t back = pos - r.start + H;  // index into init, in [0, H)
#pragma unroll
          for (int i = 0; i < H; ++i)
            if (i == back)
#pragma unroll
              for (int c = 0; c < N; ++c) vals[c] = init[i][c];
        }
#pragma unroll
        for (int c = 0; c < N; ++c) flat[c * H + j] = vals[c];
      }
#pragma unroll
      for (int i = 0; i < H; ++i) {
        uint32_t words[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) words[q] = pack_bf16x2(flat[8 * i + 2 * q], flat[8 * i + 2 * q + 1]);
        *reinterpret_cast<uint4*>(state + 8 * i) = make_uint4(words[0], words[1], words[2], words[3]);
      }
    }
  }
}

// Grid: (channel blocks, token tiles, sequences). The tile count only needs to cover the longest
// sequence for full parallelism; the kernel's tile loop covers any remainder.
inline dim3 causal_conv1d_grid(const CausalConv1dParams& p) {
  const int64_t threads_needed = p.channels / kChannelsPerThread;
  const auto gx = static_cast<unsigned>((threads_needed + kThreads - 1) / kThreads);
  const int64_t max_len =
      p.seqs.cu_seqlens == nullptr ? 1 : (p.seqs.max_seqlen > 0 ? p.seqs.max_seqlen : p.seqs.tokens);
  int64_t tiles = (max_len + kTileTokens - 1) / kTileTokens;
  if (tiles > 65535) tiles = 65535;
  return dim3(gx, static_cast<unsigned>(tiles), static_cast<unsigned>(p.seqs.batch));
}

}  // namespace qwen35_trt::kernels::gdn_conv_impl
