// What the fused (moe.cpp) and naive (moe_naive.cpp) Nvfp4Linear / Nvfp4MoE share: argument
// validation and the activation preparation, so both round at the same points.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qwen35_trt/moe.h"

namespace qwen35_trt::moe::detail {

// Validate a whole call (throws std::invalid_argument naming the argument).
void check_linear_call(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& w,
                       Activation act, Span<uint16_t> y);
void check_moe_call(Span<const uint16_t> hidden, Span<const float> router_logits,
                    std::size_t tokens, std::size_t top_k, const MoeExperts& experts,
                    const SharedExpert* shared, Activation act, Span<uint16_t> out);

// bf16 bits -> fp32.
void bf16_row(const uint16_t* x, std::size_t n, float* out);

// One activation row (fp32, `cols` values) made ready for the GEMM: unchanged for W4A16,
// quantized-dequantized per 16 (without the global) for W4A4.
void prepare_activation(const float* x, std::size_t cols, Activation act, float input_scale,
                        float* out);

}  // namespace qwen35_trt::moe::detail
