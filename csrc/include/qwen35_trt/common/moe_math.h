// Nvfp4Linear / Nvfp4MoE facts shared by the CPU reference (qwen35_trt/moe.h) and the CUDA
// kernels (qwen35_trt/kernels/moe.h): the scale layouts, the activation modes, the limits and the
// per-element W4A4 activation quantization, so that every implementation rounds at the same
// points. SwiGLU and the sigmoid gate are in qwen35_trt/common/scalar_math.h.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/nvfp4_codec.h"

namespace qwen35_trt::moe {

// How the block scales of a weight [rows, cols] are stored: row-major [rows, cols / 16] FP8,
// 128x4-swizzled [roundup(rows, 128), roundup(cols / 16, 4)] FP8 (sm_100: what block-scaled MMA
// reads), or the W4A16 fragment layout (sm_90, sm_120): row-major UE5M3 scales AND the codes of
// each row permuted into MMA fragment order (qwen35_trt/common/w4a16_fragments.h). Only the W4A16
// GEMM reads the fragment layout; the CPU reference takes ModelOpt's order.
enum class ScaleLayout : int { kRowMajor = 0, kSwizzled128x4 = 1, kW4A16Fragments = 2 };

// What the target's kernels compute: BF16 activations (Hopper, and the sm_100 fallback) or
// NVFP4 activations quantized per 16 with the static input_scale (sm_100 native).
enum class Activation : int { kW4A16 = 0, kW4A4 = 1 };

inline constexpr int kMaxTopK = 32;  // largest top_k any implementation accepts

// Byte offset of scale (row, block) of one [rows, cols] matrix in `layout`; `blocks` = cols / 16.
QWEN35_HD std::size_t scale_offset(ScaleLayout layout, std::size_t row, std::size_t block,
                                   std::size_t blocks) {
  return layout != ScaleLayout::kSwizzled128x4
             ? row * blocks + block
             : nvfp4::swizzle_offset_128x4(row, block, nvfp4::round_up(blocks, 4));
}

// Bytes of the scales of one [rows, cols] matrix in `layout` (the per-matrix stride).
QWEN35_HD std::size_t scale_bytes(ScaleLayout layout, std::size_t rows, std::size_t cols) {
  const std::size_t blocks = cols / nvfp4::kBlockSize;
  return layout != ScaleLayout::kSwizzled128x4
             ? rows * blocks
             : nvfp4::round_up(rows, 128) * nvfp4::round_up(blocks, 4);
}

// The FP8 block scale of 16 activations whose largest magnitude is `amax`, for W4A4:
// fp8(clamp(amax / (6 * input_scale), 2^-9, 448)), as ModelOpt / the spec op compute it.
QWEN35_HD uint8_t activation_block_scale(float amax, float input_scale) {
  float s = amax / (nvfp4::kE2M1Max * input_scale);
  if (!(s >= nvfp4::kScaleMin)) s = nvfp4::kScaleMin;  // also maps NaN to the minimum
  if (s > nvfp4::kE4M3Max) s = nvfp4::kE4M3Max;
  return nvfp4::encode_e4m3(s);
}

// Quantize-dequantize one block of 16 activations for W4A4: codes = e2m1(x / (sa * input_scale))
// and xq = e2m1(code) * sa (the global input_scale is applied after the dot product).
QWEN35_HD void quantize_activation_block(const float* x, float input_scale, float* xq) {
  float amax = 0.0f;
  for (int i = 0; i < nvfp4::kBlockSize; ++i) amax = fmaxf(amax, fabsf(x[i]));
  const float sa = nvfp4::decode_e4m3(activation_block_scale(amax, input_scale));
  const float denom = sa * input_scale;
  for (int i = 0; i < nvfp4::kBlockSize; ++i) {
    xq[i] = nvfp4::decode_e2m1(nvfp4::encode_e2m1(x[i] / denom)) * sa;
  }
}

}  // namespace qwen35_trt::moe
