// Gated DeltaNet facts shared by the CPU reference (qwen35_trt/gdn.h) and the CUDA kernels
// (qwen35_trt/kernels/gdn.h): the constants of the contract and the per-element gate and conv
// math, so that both compute the gates, the conv epilogue and the bf16 rounding the same way.
// Written as torch computes it on fp32 (python/qwen35_trt/ops/gated_delta_rule.py, conv1d.py).
#pragma once

#include <cmath>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/scalar_math.h"

namespace qwen35_trt::gdn {

inline constexpr int kChunkSize = 64;          // tokens per chunk of the chunked (WY/UT) form
inline constexpr float kL2NormEps = 1e-6f;     // q/k L2 norm: x * rsqrt(sum(x^2) + eps)
inline constexpr int kMaxConvWidth = 8;        // largest supported conv kernel width

// Log-space decay of one token and value head: g = -exp(A_log) * softplus(a + dt_bias) <= 0.
QWEN35_HD float gate_log_decay(float a, float A_log, float dt_bias) {
  return -expf(A_log) * math::softplus(a + dt_bias);
}

// Write strength: beta = sigmoid(b), rounded to b's dtype (bf16 inputs give a bf16 beta, as
// transformers computes `b.sigmoid()` in the activation dtype).
QWEN35_HD float gate_beta(float b, bool b_is_bf16) {
  const float s = math::sigmoid(b);
  return b_is_bf16 ? math::round_bf16(s) : s;
}

// Conv epilogue: silu of the fp32 accumulator. For bf16 activations the conv result is rounded
// to bf16 before the SiLU (transformers runs conv1d and silu as two bf16 ops).
QWEN35_HD float conv_epilogue(float acc, bool is_bf16) {
  return math::silu(is_bf16 ? math::round_bf16(acc) : acc);
}

}  // namespace qwen35_trt::gdn
