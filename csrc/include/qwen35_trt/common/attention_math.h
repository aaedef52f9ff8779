// Gated attention facts shared by the CPU reference (qwen35_trt/attention.h) and the CUDA kernels
// (qwen35_trt/kernels/attention.h): the limits of the contract and the per-head scalar math, so
// that both normalise, rotate, score, normalise the softmax and gate with the same operations in
// the same order (docs/ops.md "GatedAttention"). Written as transformers computes Qwen3.5's
// attention in bf16 (python/qwen35_trt/ops/attention.py): every bf16 cast point of the spec is a
// round_bf16 here.
#pragma once

#include <cmath>
#include <cstdint>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/scalar_math.h"

namespace qwen35_trt::attention {

// One warp of the CUDA attention kernel owns a head: lane l holds the head_dim / 32 consecutive
// dims [l * E, (l + 1) * E). The dot product of a query and a key is summed in that shape (a
// sequential sum per lane, then a butterfly over the 32 lanes) by the reference too.
inline constexpr int kLanes = 32;
inline constexpr int kMaxHeadDim = 256;  // E <= 8 dims per lane

// Zero-centred RMSNorm of one head, in fp32, then rounded to bf16 (the q_norm / k_norm of the
// layer): y[d] = bf16((x[d] * (1 / sqrt(mean(x^2) + eps))) * (1 + w[d])), the sum of squares
// taken in ascending d.
QWEN35_HD float head_rms_inverse(const float* x, int head_dim, float eps) {
  float sumsq = 0.0f;
  for (int d = 0; d < head_dim; ++d) sumsq = math::add_rn(sumsq, math::mul_rn(x[d], x[d]));
  return 1.0f / sqrtf(sumsq / static_cast<float>(head_dim) + eps);
}
QWEN35_HD float head_rms_apply(float x, float inv_rms, float w) {
  return math::round_bf16(math::mul_rn(math::mul_rn(x, inv_rms), 1.0f + w));
}

// RoPE (NeoX rotate-half over the first rotary_dim dims): frequency i in [0, rotary_dim / 2)
// turns dims i and i + rotary_dim / 2. inv_freq = 1 / theta^(2i / rotary_dim) and the angle
// pos * inv_freq in fp32; cos and sin rounded to bf16 (transformers casts them to the
// activations' dtype).
QWEN35_HD float rope_inv_freq(int i, int rotary_dim, float theta) {
  return 1.0f / powf(theta, static_cast<float>(2 * i) / static_cast<float>(rotary_dim));
}
QWEN35_HD void rope_cos_sin(int64_t pos, int i, int rotary_dim, float theta, float* c, float* s) {
  const float angle = math::mul_rn(static_cast<float>(pos), rope_inv_freq(i, rotary_dim, theta));
  *c = math::round_bf16(cosf(angle));
  *s = math::round_bf16(sinf(angle));
}
// One rotated element from bf16 inputs: x * cos + rotate_half(x) * sin, each product and the sum
// rounded to bf16 (three bf16 ops in the spec). `partner` is x[d + half] for d < half (entering
// negated) and x[d - half] for half <= d < rotary_dim.
QWEN35_HD float rope_apply(float x, float partner, bool first_half, float c, float s) {
  const float a = math::round_bf16(math::mul_rn(x, c));
  const float b = math::round_bf16(math::mul_rn(first_half ? -partner : partner, s));
  return math::round_bf16(math::add_rn(a, b));
}

// The dot product of a query and a key head in the kernel's order: lane l sums its E = head_dim / 32
// dims in ascending order, then the 32 partial sums meet in a butterfly (lane l adds lane l ^ 16,
// then ^ 8, ^ 4, ^ 2, ^ 1; every lane ends with the same bits because a + b == b + a).
QWEN35_HD float head_dot(const float* q, const float* k, int head_dim) {
  const int per_lane = head_dim / kLanes;
  float part[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    float acc = 0.0f;
    for (int e = 0; e < per_lane; ++e) acc = math::add_rn(acc, math::mul_rn(q[l * per_lane + e], k[l * per_lane + e]));
    part[l] = acc;
  }
  for (int mask = kLanes / 2; mask >= 1; mask /= 2) {
    float next[kLanes];
    for (int l = 0; l < kLanes; ++l) next[l] = math::add_rn(part[l], part[l ^ mask]);
    for (int l = 0; l < kLanes; ++l) part[l] = next[l];
  }
  return part[0];
}

// The score of a key from the fp32 dot product of the bf16 query and key: the matmul's bf16
// result times the scale, rounded again (transformers: bf16 matmul, then `* scaling` in bf16).
QWEN35_HD float score_from_dot(float dot, float scale) {
  return math::round_bf16(math::mul_rn(math::round_bf16(dot), scale));
}

// Softmax over the keys of a query, in fp32, one pass of the scores in ascending key order:
// m = running max, l = running sum of exp(s - m) rescaled when m grows. The first key sets m.
struct SoftmaxState {
  float m;
  float l;
};
QWEN35_HD SoftmaxState softmax_start() { return SoftmaxState{-INFINITY, 0.0f}; }
QWEN35_HD void softmax_add(SoftmaxState& st, float s) {
  if (s > st.m) {
    st.l = math::add_rn(math::mul_rn(st.l, expf(st.m - s)), 1.0f);  // exp(-inf) = 0 for the first key
    st.m = s;
  } else {
    st.l = math::add_rn(st.l, expf(s - st.m));
  }
}
// The probability of a key, rounded to bf16 (transformers: fp32 softmax, cast to bf16).
QWEN35_HD float softmax_prob(const SoftmaxState& st, float s) { return math::round_bf16(expf(s - st.m) / st.l); }

// The output element from the fp32 sum of p * v (ascending keys) and the bf16 gate:
// bf16(bf16(o) * bf16(sigmoid(gate))).
QWEN35_HD float gated_output(float o, float gate) {
  return math::round_bf16(math::mul_rn(math::round_bf16(o), math::round_bf16(math::sigmoid(gate))));
}

}  // namespace qwen35_trt::attention
