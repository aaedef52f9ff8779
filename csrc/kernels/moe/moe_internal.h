// Internal launchers shared by the files of csrc/kernels/moe/ (not part of the public API in
// qwen35_trt/kernels/moe.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "qwen35_trt/kernels/moe.h"

namespace qwen35_trt::kernels::moe_detail {

// Row tiles of the grouped GEMMs: BM rows of one group (expert) each. Built on the device by
// moe_plan from the expert histogram, so the host never waits for the routing.
struct TileList {
  const int32_t* group_offsets = nullptr;  // [E + 1] first permuted row of each expert
  const int32_t* tile_group = nullptr;     // [max_tiles] expert of each tile
  const int32_t* tile_row0 = nullptr;      // [max_tiles] first permuted row of each tile
  const int32_t* num_tiles = nullptr;      // [1] tiles in use
  int32_t max_tiles = 0;                   // capacity (grid sizing)
};

inline int32_t max_row_tiles(int64_t rows, int32_t groups, int32_t bm) {
  return static_cast<int32_t>((rows + bm - 1) / bm + groups);
}

// W4A16 GEMM over row tiles:
//   dense (tiles.tile_group == nullptr): rows [0, rows) of one group (group 0);
//   grouped: the tiles of `tiles`, group g's rows ending at group_offsets[g + 1].
// A row r reads a[(a_rows ? a_rows[r] : r) * lda]; output row r is out[r * ldo].
//   plain   out[r, n] = bf16(s2_b0 * sum_k a[r, k] Wq_b0[n, k])
//   swiglu  out[r, n] = bf16(silu(s2_b0 * a.Wq_b0[n]) * (s2_b1 * a.Wq_b1[n]))
struct W4A16GemmArgs {
  const __nv_bfloat16* a = nullptr;
  int64_t lda = 0;
  const int32_t* a_rows = nullptr;
  Nvfp4DeviceWeights b0, b1;
  __nv_bfloat16* out = nullptr;
  int64_t ldo = 0;
  int32_t n = 0;
  int32_t k = 0;
  int64_t rows = 0;  // dense mode
  TileList tiles;    // grouped mode
  bool swiglu = false;
  int32_t bm = 16;   // 16, 64 or 128 (the tile list must have been built for the same bm)
};

cudaError_t launch_w4a16_gemm(const W4A16GemmArgs& args, cudaStream_t stream);

// Row-tile height for `rows` rows spread over `groups` groups (an average, chosen on the host).
int32_t choose_bm(int64_t rows, int32_t groups);

// --- routing.cu ---------------------------------------------------------------------------------

// Top-k of each token's logits (ties -> lower index), softmax over the selected ones, and the
// expert histogram (counts must be zeroed first). One warp per token.
cudaError_t launch_route(const void* logits, bool logits_bf16, int32_t tokens, int32_t experts,
                         int32_t top_k, int32_t* ids, float* weights, int32_t* counts,
                         cudaStream_t stream);

// From counts [E]: group_offsets [E + 1], the row tiles for height bm, and (sf_offsets, if not
// null) the first row of each expert's 128-row-padded scale-factor block [E + 1] (native path).
// Resets counts to zero for moe_scatter's cursors.
cudaError_t launch_plan(int32_t* counts, int32_t experts, int32_t bm, int32_t* group_offsets,
                        int32_t* tile_group, int32_t* tile_row0, int32_t* num_tiles,
                        int32_t* sf_offsets, cudaStream_t stream);

// Entry i = t * top_k + j goes to permuted row group_offsets[ids[i]] + (arrival order);
// perm_token[row] = t, row_of[i] = row, and (row_expert, if not null) row_expert[row] = ids[i].
cudaError_t launch_scatter(const int32_t* ids, int32_t entries, int32_t top_k,
                           const int32_t* group_offsets, int32_t* cursors, int32_t* perm_token,
                           int32_t* row_of, int32_t* row_expert, cudaStream_t stream);

// out[t] = bf16(sum_j w[t, j] * y[row_of[t, j]] + sigmoid(hidden[t] . shared_gate_weight) *
// y_shared[t]) (the shared term only when y_shared is not null).
cudaError_t launch_combine(const __nv_bfloat16* y, const int32_t* row_of, const float* weights,
                           int32_t tokens, int32_t top_k, int32_t hidden,
                           const __nv_bfloat16* y_shared, const __nv_bfloat16* hidden_states,
                           const __nv_bfloat16* shared_gate_weight, __nv_bfloat16* out,
                           cudaStream_t stream);

// --- grouped_gemm_nvfp4_sm100.cu (sm_100a only; stubs return cudaErrorNotSupported) -----------

struct NativeMoeWorkspace {
  const int32_t* ids;           // [T, k]
  const int32_t* group_offsets; // [E + 1]
  const int32_t* sf_offsets;    // [E + 1]
  const int32_t* perm_token;    // [T k]
  const int32_t* row_expert;    // [T k]
  __nv_bfloat16* y;             // [T k, H] routed outputs (permuted rows)
  void* scratch;                // native_moe_scratch_bytes()
};

std::size_t native_moe_scratch_bytes(const Nvfp4MoeParams& p);
cudaError_t native_moe_experts(const Nvfp4MoeParams& p, const NativeMoeWorkspace& ws,
                               cudaStream_t stream);
// The shared expert on the native path: act [T, Is] and y [T, H] (bf16), scratch as above.
cudaError_t native_shared_expert(const Nvfp4MoeParams& p, __nv_bfloat16* act, __nv_bfloat16* y,
                                 void* scratch, cudaStream_t stream);
std::size_t native_linear_workspace_bytes(const Nvfp4LinearParams& p);
cudaError_t native_linear(const Nvfp4LinearParams& p, void* workspace, cudaStream_t stream);
bool native_compiled();

}  // namespace qwen35_trt::kernels::moe_detail
