// Gated attention with a paged KV cache: the CPU reference of the GatedAttention contract
// (docs/ops.md). The scalar math it shares with the CUDA kernels (qwen35_trt/kernels/attention.h)
// is in qwen35_trt/common/attention_math.h; both compute the same bits except where the device's
// expf / cosf / sinf / powf differ from the host's in the last place.
//
// A call processes B sequences, each continuing its cached context by >= 1 new tokens (a prompt,
// a prefill chunk or one decode token alike). Per sequence i: tokens [cu_seqlens[i],
// cu_seqlens[i + 1]) at positions context_lens[i], context_lens[i] + 1, ... For every new token:
//   q, gate = the token's q_proj row split per head ([q_h | gate_h], head_dim each)
//   q = rope(rms_norm(q, q_norm_weight)); k = rope(rms_norm(k, k_norm_weight))   (per head)
//   the token's k and v are written to the KV pool at its position (block_tables[i][pos / bs],
//   row pos % bs), then
//   o_h = softmax(score(q_h, K_g) over positions 0..pos) V_g   (g = h / (nh / nkv): GQA)
//   out = o * sigmoid(gate)
// Element type: bfloat16 bit patterns (uint16_t), the only dtype of the op. All arrays dense and
// row-major; the KV pool [num_blocks, 2, nkv, block_size, head_dim] holds K (index 0) and V
// (index 1) of every cached token, post norm and RoPE, and is updated in place.
//
// Every function validates its arguments and throws std::invalid_argument with a message that
// starts with the argument's name. Block ids used by one call must not be shared with another
// sequence of the call (not checked).
#pragma once

#include <cstdint>

#include "qwen35_trt/common/attention_math.h"  // limits and scalar math (shared with the kernels)
#include "qwen35_trt/span.h"

namespace qwen35_trt::attention {

struct GatedAttentionArgs {
  Span<const uint16_t> qg;             // [T, nh * 2 * hd]: q_proj output, per head [query | gate]
  Span<const uint16_t> k;              // [T, nkv * hd]: k_proj output (before k_norm)
  Span<const uint16_t> v;              // [T, nkv * hd]
  Span<const uint16_t> q_norm_weight;  // [hd] (zero-centred: gain 1 + w)
  Span<const uint16_t> k_norm_weight;  // [hd]
  Span<uint16_t> kv_pool;              // [num_blocks, 2, nkv, block_size, hd], updated in place
  Span<const int32_t> block_tables;    // [B, max_blocks_per_seq]: physical block of each logical block
  Span<const int32_t> cu_seqlens;      // [B + 1]: 0 = c0 < c1 < ... < cB = T
  Span<const int32_t> context_lens;    // [B]: cached tokens before this call (>= 0)
  Span<uint16_t> out;                  // [T, nh * hd]
  int64_t num_heads = 0;               // nh, a multiple of nkv
  int64_t num_kv_heads = 0;            // nkv
  int64_t head_dim = 0;                // hd: a multiple of 32, <= kMaxHeadDim
  int64_t rotary_dim = 0;              // even, in [0, hd]: RoPE on the first rotary_dim dims
  int64_t block_size = 0;              // tokens per KV block (>= 1)
  float rope_theta = 0.0f;             // > 0
  float eps = 0.0f;                    // q/k RMSNorm epsilon, >= 0
  float scale = 0.0f;                  // score scale, finite and > 0 (the model: hd^-0.5)
};

void gated_attention(const GatedAttentionArgs& args);

}  // namespace qwen35_trt::attention
