// W4A16 grouped GEMM launcher: NVFP4 weights dequantized to BF16 in registers, mma.sync.m16n8k16
// BF16 tensor-core MMA with fp32 accumulation; SwiGLU of two weight operands fused in the
// epilogue. Serves the routed experts (grouped by expert over device-built row tiles), the shared
// expert and every dense Nvfp4Linear (one group). Built for every target architecture (sm_80
// instructions only); on sm_100 it is the fallback of the native W4A4 path. Contract:
// W4A16GemmArgs in moe_internal.h; the device code (tile loop, pipeline, fragment conversion,
// epilogue) is in w4a16_gemm_kernel.cuh.
#include <algorithm>
#include <cstdint>

#include "common/per_device.h"
#include "moe_internal.h"
#include "w4a16_gemm_kernel.cuh"

namespace qwen35_trt::kernels::moe_detail {
namespace {

using w4a16::KernelArgs;
using w4a16::LargeTile;
using w4a16::MediumTile;
using w4a16::Plan;
using w4a16::SmallPlainTile;
using w4a16::SmallTile;
using w4a16::Smem;

// kFast: the plan's fast kind (Plan::fast), the kernel without k bounds checks; kFrag: weights in
// the W4A16 fragment layout (Plan::fragments).
template <class C, bool kSwiGLU, bool kFast, bool kFrag>
__global__ void __launch_bounds__(C::kThreads, C::kMinCtas) w4a16_gemm_kernel(const __grid_constant__ KernelArgs ka) {
  extern __shared__ __align__(16) uint8_t smem[];
  w4a16::gemm_tiles<C, kSwiGLU, kFast, kFrag>(ka, smem);
}

// SM count of `device`, for the persistent grid.
cudaError_t sm_count(int device, int& count) {
  static PerDevice<int> cache;
  return cache.get(device, count, [device](int& n) {
    return cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  });
}

template <class C, bool kSwiGLU, bool kFast, bool kFrag>
cudaError_t launch_config(const W4A16GemmArgs& g, const Plan& plan, cudaStream_t stream) {
  using S = Smem<C, kSwiGLU, kFrag>;
  const auto kernel = w4a16_gemm_kernel<C, kSwiGLU, kFast, kFrag>;
  const bool grouped = g.tiles.tile_group != nullptr;
  const int64_t m_tiles = grouped ? g.tiles.max_tiles : (g.rows + C::BM - 1) / C::BM;
  const int64_t tiles = m_tiles * plan.n_tiles;
  if (tiles == 0) return cudaSuccess;
  int device = 0, sms = 0, blocks_per_sm = 1;
  cudaError_t e = current_device(device);
  if (e == cudaSuccess) e = sm_count(device, sms);
  // The shared-memory opt-in and the occupancy it gives: once per (kernel, device).
  static PerDevice<int> occupancy;
  if (e == cudaSuccess) {
    e = occupancy.get(device, blocks_per_sm, [kernel](int& n) {
      cudaError_t s = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::kBytes);
      if (s == cudaSuccess) s = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, C::kThreads, S::kBytes);
      if (n < 1) n = 1;
      return s;
    });
  }
  if (e != cudaSuccess) return e;
  const int64_t grid = std::min<int64_t>(tiles, static_cast<int64_t>(sms) * blocks_per_sm);
  KernelArgs ka{g, plan};
  kernel<<<static_cast<unsigned>(grid), C::kThreads, S::kBytes, stream>>>(ka);
  return cudaGetLastError();
}

template <class C, bool kSwiGLU>
cudaError_t launch_tile(const W4A16GemmArgs& g, Plan plan, cudaStream_t stream) {
  plan.n_tiles = w4a16::n_tiles<C>(g);
  if (plan.fragments) {
    return plan.fast ? launch_config<C, kSwiGLU, true, true>(g, plan, stream)
                     : launch_config<C, kSwiGLU, false, true>(g, plan, stream);
  }
  return plan.fast ? launch_config<C, kSwiGLU, true, false>(g, plan, stream)
                   : launch_config<C, kSwiGLU, false, false>(g, plan, stream);
}

template <class C>
cudaError_t launch_tile(const W4A16GemmArgs& g, const Plan& plan, cudaStream_t stream) {
  return g.swiglu ? launch_tile<C, true>(g, plan, stream) : launch_tile<C, false>(g, plan, stream);
}

}  // namespace

int32_t choose_bm(int64_t rows, int32_t groups) {
  const int64_t avg = (rows + groups - 1) / (groups > 0 ? groups : 1);
  if (avg <= 16) return 16;
  if (avg <= 96) return 64;
  return 128;
}

cudaError_t launch_w4a16_gemm(const W4A16GemmArgs& g, cudaStream_t stream) {
  if (g.n < 1 || g.k < nvfp4::kBlockSize || g.k % nvfp4::kBlockSize != 0 || g.rows < 0) {
    return cudaErrorInvalidValue;
  }
  const bool grouped = g.tiles.tile_group != nullptr;
  if (grouped && (g.tiles.group_offsets == nullptr || g.tiles.tile_row0 == nullptr ||
                  g.tiles.num_tiles == nullptr || g.tiles.max_tiles < 0)) {
    return cudaErrorInvalidValue;
  }
  if (!grouped && g.rows == 0) return cudaSuccess;
  Plan plan{};
  if (!w4a16::make_plan(g, plan)) return cudaErrorInvalidValue;
  switch (g.bm) {
    case 16: return g.swiglu ? launch_tile<SmallTile, true>(g, plan, stream)
                             : launch_tile<SmallPlainTile, false>(g, plan, stream);
    case 64: return launch_tile<MediumTile>(g, plan, stream);
    case 128: return launch_tile<LargeTile>(g, plan, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace qwen35_trt::kernels::moe_detail
