// NVFP4 -> BF16 dequantization; contract in qwen35_trt/kernels/nvfp4_dequant.h.
#include "qwen35_trt/kernels/nvfp4_dequant.h"
#include "qwen35_trt/common/nvfp4_codec.h"

namespace qwen35_trt::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const uint32_t l = __bfloat16_as_ushort(__float2bfloat16_rn(lo));
  const uint32_t h = __bfloat16_as_ushort(__float2bfloat16_rn(hi));
  return l | (h << 16);
}

// One thread per 16-element block: 8 packed bytes and one scale in, 32 bytes of bf16 out.
__global__ void __launch_bounds__(kThreads)
    nvfp4_dequantize_bf16_kernel(const uint2* __restrict__ packed, const uint8_t* __restrict__ scales,
                                 const float* __restrict__ weight_scale_2, uint4* __restrict__ out,
                                 int64_t blocks_per_matrix, int64_t total_blocks) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total_blocks;
       t += stride) {
    const float block_scale =
        nvfp4::decode_e4m3(scales[t]) * __ldg(weight_scale_2 + t / blocks_per_matrix);
    const uint2 codes = packed[t];
    uint32_t words[8];
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      const uint32_t byte = ((w < 4 ? codes.x : codes.y) >> (8 * (w % 4))) & 0xFFu;
      words[w] = pack_bf16x2(nvfp4::decode_e2m1(static_cast<uint8_t>(byte & 0xF)) * block_scale,
                             nvfp4::decode_e2m1(static_cast<uint8_t>(byte >> 4)) * block_scale);
    }
    out[2 * t] = make_uint4(words[0], words[1], words[2], words[3]);
    out[2 * t + 1] = make_uint4(words[4], words[5], words[6], words[7]);
  }
}

}  // namespace

cudaError_t nvfp4_dequantize_bf16(const Nvfp4DequantParams& p, cudaStream_t stream) {
  if (p.batch < 0 || p.rows < 0 || p.cols <= 0 || p.cols % nvfp4::kBlockSize != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t blocks_per_matrix = p.rows * (p.cols / nvfp4::kBlockSize);
  const int64_t total_blocks = p.batch * blocks_per_matrix;
  if (total_blocks == 0) return cudaSuccess;
  if (p.packed == nullptr || p.scales == nullptr || p.weight_scale_2 == nullptr ||
      p.out == nullptr || reinterpret_cast<uintptr_t>(p.packed) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(p.out) % 16 != 0) {
    return cudaErrorInvalidValue;
  }
  // Enough CTAs to fill any current GPU several times over; the grid-stride loop does the rest.
  const int64_t wanted = (total_blocks + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(wanted < 65536 ? wanted : 65536);
  nvfp4_dequantize_bf16_kernel<<<grid, kThreads, 0, stream>>>(
      reinterpret_cast<const uint2*>(p.packed), p.scales, p.weight_scale_2,
      reinterpret_cast<uint4*>(p.out), blocks_per_matrix, total_blocks);
  return cudaGetLastError();
}

}  // namespace qwen35_trt::kernels
