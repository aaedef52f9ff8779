// Scalar math of the ops, defined once for the CPU reference and the CUDA kernels so that both
// round at the same points. Written as torch computes these functions on fp32 (the spec ops,
// python/qwen35_trt/ops/), with expf / log1pf as the only transcendental calls.
#pragma once

#include <cmath>
#include <cstdint>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/nvfp4_codec.h"  // bf16_to_float, float_to_bf16

namespace qwen35_trt::math {

inline constexpr float kSoftplusThreshold = 20.0f;  // torch's softplus returns x above this

QWEN35_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
QWEN35_HD float silu(float x) { return x / (1.0f + expf(-x)); }
QWEN35_HD float swiglu(float gate, float up) { return silu(gate) * up; }
QWEN35_HD float softplus(float x) { return x > kSoftplusThreshold ? x : log1pf(expf(x)); }

// A product or sum that the device compiler may not fuse into an FMA (the host is built with
// -ffp-contract=off), so the reference and the kernels round at the same points.
QWEN35_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QWEN35_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// bf16 round trip (round to nearest even): the cast points the spec inherits from transformers.
QWEN35_HD float round_bf16(float x) { return nvfp4::bf16_to_float(nvfp4::float_to_bf16(x)); }

}  // namespace qwen35_trt::math
