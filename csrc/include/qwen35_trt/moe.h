// Nvfp4Linear and Nvfp4MoE: the CPU reference of the two contracts in docs/ops.md. What it shares
// with the CUDA kernels (scale layouts, activation modes, SwiGLU, activation quantization) is in
// qwen35_trt/common/moe_math.h and scalar_math.h, so that every implementation rounds at the same
// points.
//
// Weights are NVFP4 as in nvfp4.h: packed E2M1 pairs [.., N, K/2] (low nibble = even column),
// FP8 E4M3 block scales per 16 columns, fp32 globals. "Wq" below is e2m1(code) * fp8(scale),
// which is exact in bfloat16 (at most 6 significant bits), so W = Wq * weight_scale_2 and the
// global scale is applied once to the fp32 sum:
//   Nvfp4Linear (W4A16)  y[m, n] = bf16( s2 * sum_k x[m, k] * Wq[n, k] )
//   Nvfp4Linear (W4A4)   y[m, n] = bf16( (input_scale * s2) * sum_k xq[m, k] * Wq[n, k] )
// where xq is x quantized per 16 columns to NVFP4 with the static global input_scale
// (quantize_activation_block below) and dequantized without the global.
//
// Nvfp4MoE, for tokens x [T, H] (bf16), router logits [T, E], top_k:
//   routing   ids[t, 0..k) = the k largest logits (ties -> lower expert index), in rank order;
//             w[t, j] = exp(l_j - l_0) / sum_j' exp(l_j' - l_0)  (fp32; equal to the softmax over
//             all experts restricted to the top k and renormalised)
//   expert e  g = s2[e, 0] * sum_k x Wq_gate[e],  u = s2[e, 1] * sum_k x Wq_up[e]   (fp32, [I])
//             a = bf16( silu(g) * u )                                              ([I])
//             y = bf16( s2_down[e] * sum_i a Wq_down[e] )                           ([H])
//   combine   out[t] = bf16( sum_j w[t, j] * y_j  (j = 0..k-1, in this order)
//                           + sigmoid(x . shared_gate) * y_shared )       (shared term optional)
// with the shared expert computed like a routed one (its own three linears, intermediate Is).
// W4A4 quantizes x (gate_up input_scale[e]) and a (down input_scale[e]) before each GEMM as in
// Nvfp4Linear. Each token's result depends only on its own inputs: the reference accumulates
// every dot product in one fixed order, whatever else is in the batch.
//
// All arrays are dense and row-major; bf16 travels as uint16_t bit patterns, FP8 as uint8_t.
// Every function validates its arguments and throws std::invalid_argument with a message that
// starts with the argument's name.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qwen35_trt/common/moe_math.h"     // layouts, activation modes, W4A4 quantization
#include "qwen35_trt/common/scalar_math.h"  // silu, sigmoid, swiglu
#include "qwen35_trt/nvfp4.h"
#include "qwen35_trt/span.h"

namespace qwen35_trt::moe {

// ---------------------------------------------------------------------------------------------
// Argument structs (CPU reference). Spans must hold exactly the documented sizes.

// `count` NVFP4 matrices [rows, cols] stacked: packed [count, rows, cols / 2] and scales
// [count * scale_bytes(layout, rows, cols)].
struct Nvfp4Weights {
  Span<const uint8_t> packed;
  Span<const uint8_t> scales;
  ScaleLayout layout = ScaleLayout::kRowMajor;
  std::size_t count = 1;
  std::size_t rows = 0;  // N (output features)
  std::size_t cols = 0;  // K (input features), a positive multiple of 16
};

// Routed experts of one layer (fused gate+up: rows [0, I) are gate, [I, 2I) are up).
struct MoeExperts {
  std::size_t num_experts = 0;   // E
  std::size_t hidden = 0;        // H
  std::size_t intermediate = 0;  // I
  Nvfp4Weights gate_up;          // count E, rows 2I, cols H
  Span<const float> gate_up_scale_2;     // [E, 2]: (gate, up) global per expert
  Span<const float> gate_up_input_scale; // [E] (W4A4 only; may be empty for W4A16)
  Nvfp4Weights down;                     // count E, rows H, cols I
  Span<const float> down_scale_2;        // [E]
  Span<const float> down_input_scale;    // [E] (W4A4 only)
};

// One NVFP4 linear: weight [N, K] (count 1), its global and (W4A4) input scale.
struct Nvfp4LinearWeights {
  Nvfp4Weights weight;
  float weight_scale_2 = 0.0f;
  float input_scale = 0.0f;  // W4A4 only
};

// The shared expert: three linears (gate, up [Is, H], down [H, Is]) and the bf16 gate vector
// shared_expert_gate [H] whose sigmoid(x . gate) scales its output per token.
struct SharedExpert {
  Nvfp4LinearWeights gate, up, down;
  Span<const uint16_t> gate_weight;  // [H] bf16 bits
};

// ---------------------------------------------------------------------------------------------
// CPU reference. nvfp4_linear and nvfp4_moe decode the weights on the fly, a few rows at a time,
// and use the ISA and threads of qwen35_trt/cpu.h; neither changes a bit of the result.

// Routing (see the file comment). logits [T, E] fp32 -> ids [T, top_k] int32, weights
// [T, top_k] fp32. 1 <= top_k <= min(E, kMaxTopK). NaN logits are rejected.
void route(Span<const float> logits, std::size_t tokens, std::size_t num_experts,
           std::size_t top_k, Span<int32_t> ids, Span<float> weights);

// Nvfp4Linear: x [M, K] bf16 -> y [M, N] bf16.
void nvfp4_linear(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& w,
                  Activation act, Span<uint16_t> y);

// Nvfp4MoE: hidden [T, H] bf16, router logits [T, E] fp32 -> out [T, H] bf16. `shared` may be
// null (no shared expert). Tokens may be 0 (nothing to do).
void nvfp4_moe(Span<const uint16_t> hidden, Span<const float> router_logits, std::size_t tokens,
               std::size_t top_k, const MoeExperts& experts, const SharedExpert* shared,
               Activation act, Span<uint16_t> out);

// The same two ops computed the original way: each matrix dequantized into a full fp32 copy,
// then one dot product at a time on one thread. Slow; kept as the readable form of the fused
// kernels above, which the ctest checks against it bit for bit.
namespace naive {
void nvfp4_linear(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& w,
                  Activation act, Span<uint16_t> y);
void nvfp4_moe(Span<const uint16_t> hidden, Span<const float> router_logits, std::size_t tokens,
               std::size_t top_k, const MoeExperts& experts, const SharedExpert* shared,
               Activation act, Span<uint16_t> out);
}  // namespace naive

// Validation shared with the CUDA launchers' host side (throws std::invalid_argument).
void check_weights(const char* name, const Nvfp4Weights& w);
void check_experts(const MoeExperts& experts, Activation act);
void check_shared(const SharedExpert& shared, std::size_t hidden, Activation act);

}  // namespace qwen35_trt::moe
