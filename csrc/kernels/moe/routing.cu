// Nvfp4MoE routing and combine: top-k + softmax over the selected logits, expert histogram,
// device-side tile planning, token permutation, and the weighted combine back to token order.
// Contracts: moe_internal.h; math: qwen35_trt/moe.h (route, the combine order; CPU reference).
#include <climits>
#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "moe_internal.h"
#include "qwen35_trt/common/moe_math.h"
#include "routing_kernels.cuh"

namespace qwen35_trt::kernels::moe_detail {
namespace {

using routing::combine_kernel;
using routing::kCombineThreads;
using routing::kRouteWarps;
using routing::route_kernel;
using routing::scatter_kernel;

constexpr int kPlanThreads = 256;
constexpr int kPlanItems = kMaxExperts / kPlanThreads;  // experts per thread

__global__ void __launch_bounds__(kPlanThreads)
    plan_kernel(int32_t* counts, int32_t experts, int32_t bm, int32_t* group_offsets,
                int32_t* tile_group, int32_t* tile_row0, int32_t* num_tiles, int32_t* sf_offsets) {
  using Scan = cub::BlockScan<int32_t, kPlanThreads>;
  __shared__ typename Scan::TempStorage temp;
  int32_t cnt[kPlanItems], tiles[kPlanItems], pad[kPlanItems];
  int32_t cnt_off[kPlanItems], tile_off[kPlanItems], pad_off[kPlanItems];
#pragma unroll
  for (int i = 0; i < kPlanItems; ++i) {
    const int e = threadIdx.x * kPlanItems + i;
    cnt[i] = e < experts ? counts[e] : 0;
    tiles[i] = (cnt[i] + bm - 1) / bm;
    pad[i] = (cnt[i] + 127) / 128 * 128;
  }
  int32_t total_rows, total_tiles, total_pad;
  Scan(temp).ExclusiveSum(cnt, cnt_off, total_rows);
  __syncthreads();
  Scan(temp).ExclusiveSum(tiles, tile_off, total_tiles);
  __syncthreads();
  Scan(temp).ExclusiveSum(pad, pad_off, total_pad);
#pragma unroll
  for (int i = 0; i < kPlanItems; ++i) {
    const int e = threadIdx.x * kPlanItems + i;
    if (e >= experts) continue;
    group_offsets[e] = cnt_off[i];
    if (sf_offsets != nullptr) sf_offsets[e] = pad_off[i];
    for (int32_t k = 0; k < tiles[i]; ++k) {
      tile_group[tile_off[i] + k] = e;
      tile_row0[tile_off[i] + k] = cnt_off[i] + k * bm;
    }
    counts[e] = 0;  // becomes moe_scatter's cursor
  }
  if (threadIdx.x == 0) {
    group_offsets[experts] = total_rows;
    if (sf_offsets != nullptr) sf_offsets[experts] = total_pad;
    *num_tiles = total_tiles;
  }
}

}  // namespace

cudaError_t launch_route(const void* logits, bool logits_bf16, int32_t tokens, int32_t experts,
                         int32_t top_k, int32_t* ids, float* weights, int32_t* counts,
                         cudaStream_t stream) {
  if (experts < 1 || experts > kMaxExperts || top_k < 1 || top_k > experts ||
      top_k > moe::kMaxTopK || tokens < 0) {
    return cudaErrorInvalidValue;
  }
  if (tokens == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((tokens + kRouteWarps - 1) / kRouteWarps);
  route_kernel<<<grid, kRouteWarps * 32, 0, stream>>>(logits, logits_bf16, tokens, experts, top_k,
                                                       ids, weights, counts);
  return cudaGetLastError();
}

cudaError_t launch_plan(int32_t* counts, int32_t experts, int32_t bm, int32_t* group_offsets,
                        int32_t* tile_group, int32_t* tile_row0, int32_t* num_tiles,
                        int32_t* sf_offsets, cudaStream_t stream) {
  if (experts < 1 || experts > kMaxExperts || bm < 1) return cudaErrorInvalidValue;
  plan_kernel<<<1, kPlanThreads, 0, stream>>>(counts, experts, bm, group_offsets, tile_group,
                                              tile_row0, num_tiles, sf_offsets);
  return cudaGetLastError();
}

cudaError_t launch_scatter(const int32_t* ids, int32_t entries, int32_t top_k,
                           const int32_t* group_offsets, int32_t* cursors, int32_t* perm_token,
                           int32_t* row_of, int32_t* row_expert, cudaStream_t stream) {
  if (entries == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((entries + 255) / 256);
  scatter_kernel<<<grid, 256, 0, stream>>>(ids, entries, top_k, group_offsets, cursors, perm_token,
                                           row_of, row_expert);
  return cudaGetLastError();
}

cudaError_t launch_combine(const __nv_bfloat16* y, const int32_t* row_of, const float* weights,
                           int32_t tokens, int32_t top_k, int32_t hidden,
                           const __nv_bfloat16* y_shared, const __nv_bfloat16* hidden_states,
                           const __nv_bfloat16* shared_gate_weight, __nv_bfloat16* out,
                           cudaStream_t stream) {
  if (hidden % 8 != 0) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  combine_kernel<<<static_cast<unsigned>(tokens), kCombineThreads, 0, stream>>>(
      y, row_of, weights, top_k, hidden, y_shared, hidden_states, shared_gate_weight, out);
  return cudaGetLastError();
}

}  // namespace qwen35_trt::kernels::moe_detail
