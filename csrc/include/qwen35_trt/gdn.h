// Gated DeltaNet (GDN) ops: the CPU reference of the CausalConv1d and GatedDeltaNet contracts
// (docs/ops.md). The constants and the scalar gate / conv math it shares with the CUDA kernels are
// in qwen35_trt/common/gdn_math.h.
//
// Element types: `float` (fp32) or `uint16_t` (bfloat16 bit patterns, as in nvfp4.h). State pools
// are updated in place; the slot of sequence i is slots[i]. Two forms share one set of arguments:
//   prefill  cu_seqlens [B + 1] (sequences concatenated along the token axis, each >= 1 token)
//            and has_initial_state [B] (0: start from zeros, the slot's old content is ignored);
//   decode   cu_seqlens and has_initial_state empty: one token per sequence (tokens == B), the
//            state is always read from the slot.
// Every function validates its arguments and throws std::invalid_argument with a message that
// starts with the argument's name. All arrays are dense and row-major.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qwen35_trt/common/gdn_math.h"  // constants, gates, conv epilogue (shared with the kernels)
#include "qwen35_trt/span.h"

namespace qwen35_trt::gdn {

// ---------------------------------------------------------------------------------------------
// CPU reference.

// The sequences of one call and the state slots they own.
struct SequenceBatch {
  Span<const int32_t> slots;              // [B], distinct, each in [0, num_slots)
  Span<const int32_t> cu_seqlens;         // [B + 1] for prefill; empty for decode
  Span<const uint8_t> has_initial_state;  // [B] for prefill (nonzero = read the slot); empty for decode
};

// CausalConv1d: y[t, c] = silu(sum_w weight[c, w] * h[t - W + 1 + w, c]) where h is the
// sequence's input history: the W-1 values of the slot's conv state (oldest first) followed by
// the sequence's x rows; a sequence without initial state starts from zeros. Afterwards the slot
// holds the last W-1 values of h. Shapes (C = channels, W = width, 2 <= W <= kMaxConvWidth):
//   x [tokens, C], weight [C, W], state_pool [num_slots, C, W - 1], y [tokens, C]; x, weight,
//   state_pool and y share the element type.
template <typename T>
struct CausalConv1dArgs {
  Span<const T> x;
  Span<const T> weight;
  Span<T> state_pool;
  SequenceBatch seqs;
  Span<T> y;
  int64_t channels = 0;
  int64_t width = 0;
};

void causal_conv1d(const CausalConv1dArgs<float>& args);
void causal_conv1d(const CausalConv1dArgs<uint16_t>& args);

enum class Algorithm {
  kAuto,       // chunked for prefill, recurrent for decode (what the CUDA kernels do)
  kChunked,    // chunk-of-64 WY/UT form
  kRecurrent,  // token by token (the definition)
};

// GatedDeltaNet: per sequence and value head h (key head h / (Hv / Hk)), fp32 state S [dk, dv]:
//   q, k = l2norm(q), l2norm(k) (when use_qk_l2norm);  q *= scale
//   S = exp(g_t) S;  u = beta_t (v_t - S^T k_t);  S = S + k_t u^T;  o_t = S^T q_t
// with the gates either fused (a, b, A_log, dt_bias given; g = gate_log_decay(a, A_log, dt_bias),
// beta = gate_beta(b)) or precomputed (g, beta given, fp32). Shapes:
//   q, k [tokens, Hk, dk]; v [tokens, Hv, dv]; a, b [tokens, Hv]; A_log, dt_bias [Hv] fp32;
//   g, beta [tokens, Hv] fp32; state_pool [num_slots, Hv, dk, dv] fp32; o [tokens, Hv, dv].
template <typename T>
struct GatedDeltaNetArgs {
  Span<const T> q, k, v;
  Span<const T> a, b;
  Span<const float> A_log, dt_bias;
  Span<const float> g, beta;
  Span<float> state_pool;
  SequenceBatch seqs;
  Span<T> o;
  int64_t num_k_heads = 0;
  int64_t num_v_heads = 0;
  int64_t head_k_dim = 0;
  int64_t head_v_dim = 0;
  float scale = 0.0f;  // finite and > 0; the model uses head_k_dim^-0.5
  bool use_qk_l2norm = true;
  Algorithm algorithm = Algorithm::kAuto;
};

void gated_delta_net(const GatedDeltaNetArgs<float>& args);
void gated_delta_net(const GatedDeltaNetArgs<uint16_t>& args);

}  // namespace qwen35_trt::gdn
