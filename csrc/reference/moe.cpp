// CPU reference of Nvfp4Linear and Nvfp4MoE; the contract is in qwen35_trt/moe.h and docs/ops.md.
//
// Every dot product is accumulated the same way (dot_fixed_order), so a token's output never
// depends on the other tokens of the batch or on how the work is grouped by expert.
#include "qwen35_trt/moe.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace qwen35_trt::moe {
namespace {

namespace fp4 = qwen35_trt::nvfp4;
using math::round_bf16;

[[noreturn]] void fail(const char* arg, const std::string& what) {
  throw std::invalid_argument(std::string(arg) + ": " + what);
}

std::string str(std::size_t v) { return std::to_string(v); }

void check_size(const char* arg, std::size_t got, std::size_t expected, const std::string& shape) {
  if (got != expected) {
    fail(arg, "expected " + str(expected) + " elements (" + shape + "), got " + str(got));
  }
}

void check_scale(const char* arg, float s) {
  if (!std::isfinite(s) || !(s > 0.0f)) {
    std::ostringstream os;
    os << "must be finite and > 0, got " << s;
    fail(arg, os.str());
  }
}

void check_scales(const char* arg, Span<const float> s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!std::isfinite(s[i]) || !(s[i] > 0.0f)) {
      std::ostringstream os;
      os << "must be finite and > 0, got " << s[i] << " at flat index " << i;
      fail(arg, os.str());
    }
  }
}

// Eight interleaved fp32 partial sums (element k goes to lane k % 8), combined pairwise at the
// end: a fixed order that compilers may vectorize without reassociating.
float dot_fixed_order(const float* a, const float* b, std::size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[k + l] * b[k + l];
  }
  for (int l = 0; k < n; ++k, ++l) acc[l] += a[k] * b[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Matrix `index` of `w`, rows [row0, row0 + rows), dequantized without the global: Wq (fp32,
// exact) into out [rows, cols].
void dequantize_rows(const Nvfp4Weights& w, std::size_t index, std::size_t row0, std::size_t rows,
                     float* out) {
  const std::size_t blocks = w.cols / fp4::kBlockSize;
  const uint8_t* packed = w.packed.data() + index * w.rows * (w.cols / 2);
  const uint8_t* scales = w.scales.data() + index * scale_bytes(w.layout, w.rows, w.cols);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t row = row0 + r;
    for (std::size_t b = 0; b < blocks; ++b) {
      const float s = fp4::decode_e4m3(scales[scale_offset(w.layout, row, b, blocks)]);
      const uint8_t* p = packed + row * (w.cols / 2) + b * (fp4::kBlockSize / 2);
      float* o = out + r * w.cols + b * fp4::kBlockSize;
      for (int j = 0; j < fp4::kBlockSize / 2; ++j) {
        o[2 * j] = fp4::decode_e2m1(p[j] & 0xF) * s;
        o[2 * j + 1] = fp4::decode_e2m1(p[j] >> 4) * s;
      }
    }
  }
}

// One activation row (fp32, `cols` values) made ready for the GEMM: unchanged for W4A16,
// quantized-dequantized per 16 (without the global) for W4A4.
void prepare_activation(const float* x, std::size_t cols, Activation act, float input_scale,
                        float* out) {
  if (act == Activation::kW4A16) {
    std::copy(x, x + cols, out);
    return;
  }
  for (std::size_t b = 0; b < cols; b += fp4::kBlockSize) {
    quantize_activation_block(x + b, input_scale, out + b);
  }
}

void bf16_row(const uint16_t* x, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = fp4::bf16_to_float(x[i]);
}


// A SwiGLU MLP on one activation row: dequantized gate/up [I, H] and down [H, I] weights (Wq),
// their globals and (W4A4) input scales -> y [H] fp32 values already rounded to bf16.
struct DenseMlp {
  const float* gate;  // [I, H]
  const float* up;    // [I, H]
  const float* down;  // [H, I]
  float gate_scale, up_scale, down_scale;  // weight_scale_2 (times input_scale for W4A4)
  float gate_up_input_scale, down_input_scale;
  std::size_t hidden, intermediate;
};

void mlp_row(const DenseMlp& m, const float* x, Activation act, std::vector<float>& xa,
             std::vector<float>& a, std::vector<float>& aq, float* y) {
  const std::size_t H = m.hidden, I = m.intermediate;
  prepare_activation(x, H, act, m.gate_up_input_scale, xa.data());
  for (std::size_t n = 0; n < I; ++n) {
    const float g = m.gate_scale * dot_fixed_order(xa.data(), m.gate + n * H, H);
    const float u = m.up_scale * dot_fixed_order(xa.data(), m.up + n * H, H);
    a[n] = round_bf16(math::swiglu(g, u));
  }
  prepare_activation(a.data(), I, act, m.down_input_scale, aq.data());
  for (std::size_t h = 0; h < H; ++h) {
    y[h] = round_bf16(m.down_scale * dot_fixed_order(aq.data(), m.down + h * I, I));
  }
}

void check_top_k(std::size_t top_k, std::size_t num_experts) {
  if (top_k < 1 || top_k > num_experts || top_k > static_cast<std::size_t>(kMaxTopK)) {
    fail("top_k", "must be in [1, min(num_experts=" + str(num_experts) + ", " + str(kMaxTopK) +
                      ")], got " + str(top_k));
  }
}

}  // namespace

void check_weights(const char* name, const Nvfp4Weights& w) {
  if (w.count == 0) fail(name, "count must be >= 1");
  if (w.rows == 0) fail(name, "rows (N) must be >= 1");
  if (w.cols == 0 || w.cols % fp4::kBlockSize != 0) {
    fail(name, "cols (K) must be a positive multiple of 16, got " + str(w.cols));
  }
  if (w.layout != ScaleLayout::kRowMajor && w.layout != ScaleLayout::kSwizzled128x4) {
    fail(name, "unknown scale layout " + str(static_cast<std::size_t>(w.layout)));
  }
  const std::string shape = "[" + str(w.count) + ", " + str(w.rows) + ", ";
  if (w.packed.size() != w.count * w.rows * (w.cols / 2)) {
    fail(name, "packed: expected " + str(w.count * w.rows * (w.cols / 2)) + " bytes (" + shape +
                   str(w.cols / 2) + "]), got " + str(w.packed.size()));
  }
  const std::size_t sb = scale_bytes(w.layout, w.rows, w.cols);
  if (w.scales.size() != w.count * sb) {
    fail(name, "scales: expected " + str(w.count * sb) + " bytes (" + str(w.count) + " x " +
                   str(sb) + (w.layout == ScaleLayout::kRowMajor ? " row-major" : " swizzled 128x4") +
                   "), got " + str(w.scales.size()));
  }
}

void check_experts(const MoeExperts& ex, Activation act) {
  const std::size_t E = ex.num_experts, H = ex.hidden, I = ex.intermediate;
  if (E == 0) fail("num_experts", "must be >= 1");
  if (H == 0 || H % fp4::kBlockSize != 0) {
    fail("hidden", "must be a positive multiple of 16, got " + str(H));
  }
  if (I == 0 || I % fp4::kBlockSize != 0) {
    fail("intermediate", "must be a positive multiple of 16, got " + str(I));
  }
  check_weights("gate_up", ex.gate_up);
  check_weights("down", ex.down);
  if (ex.gate_up.count != E || ex.gate_up.rows != 2 * I || ex.gate_up.cols != H) {
    fail("gate_up", "expected [E=" + str(E) + ", 2I=" + str(2 * I) + ", H=" + str(H) +
                        "], got [" + str(ex.gate_up.count) + ", " + str(ex.gate_up.rows) + ", " +
                        str(ex.gate_up.cols) + "]");
  }
  if (ex.down.count != E || ex.down.rows != H || ex.down.cols != I) {
    fail("down", "expected [E=" + str(E) + ", H=" + str(H) + ", I=" + str(I) + "], got [" +
                     str(ex.down.count) + ", " + str(ex.down.rows) + ", " + str(ex.down.cols) + "]");
  }
  check_size("gate_up.weight_scale_2", ex.gate_up_scale_2.size(), 2 * E, "[E, 2]");
  check_size("down.weight_scale_2", ex.down_scale_2.size(), E, "[E]");
  check_scales("gate_up.weight_scale_2", ex.gate_up_scale_2);
  check_scales("down.weight_scale_2", ex.down_scale_2);
  if (act == Activation::kW4A4) {
    check_size("gate_up.input_scale", ex.gate_up_input_scale.size(), E, "[E], needed for W4A4");
    check_size("down.input_scale", ex.down_input_scale.size(), E, "[E], needed for W4A4");
    check_scales("gate_up.input_scale", ex.gate_up_input_scale);
    check_scales("down.input_scale", ex.down_input_scale);
  }
}

void check_shared(const SharedExpert& s, std::size_t hidden, Activation act) {
  check_weights("shared.gate", s.gate.weight);
  check_weights("shared.up", s.up.weight);
  check_weights("shared.down", s.down.weight);
  const std::size_t Is = s.gate.weight.rows;
  const auto one = [](const Nvfp4Weights& w) { return w.count == 1; };
  if (!one(s.gate.weight) || !one(s.up.weight) || !one(s.down.weight)) {
    fail("shared", "each linear must hold exactly one matrix");
  }
  if (s.gate.weight.cols != hidden || s.up.weight.cols != hidden || s.up.weight.rows != Is) {
    fail("shared.up", "gate and up must both be [Is, H=" + str(hidden) + "], got gate [" +
                          str(Is) + ", " + str(s.gate.weight.cols) + "], up [" +
                          str(s.up.weight.rows) + ", " + str(s.up.weight.cols) + "]");
  }
  if (s.down.weight.rows != hidden || s.down.weight.cols != Is) {
    fail("shared.down", "expected [H=" + str(hidden) + ", Is=" + str(Is) + "], got [" +
                            str(s.down.weight.rows) + ", " + str(s.down.weight.cols) + "]");
  }
  check_scale("shared.gate.weight_scale_2", s.gate.weight_scale_2);
  check_scale("shared.up.weight_scale_2", s.up.weight_scale_2);
  check_scale("shared.down.weight_scale_2", s.down.weight_scale_2);
  if (act == Activation::kW4A4) {
    check_scale("shared.gate.input_scale", s.gate.input_scale);
    check_scale("shared.up.input_scale", s.up.input_scale);
    check_scale("shared.down.input_scale", s.down.input_scale);
  }
  check_size("shared.gate_weight", s.gate_weight.size(), hidden, "[H]");
}

void route(Span<const float> logits, std::size_t tokens, std::size_t num_experts,
           std::size_t top_k, Span<int32_t> ids, Span<float> weights) {
  if (num_experts == 0) fail("num_experts", "must be >= 1");
  check_top_k(top_k, num_experts);
  check_size("logits", logits.size(), tokens * num_experts, "[T, E]");
  check_size("ids", ids.size(), tokens * top_k, "[T, top_k]");
  check_size("weights", weights.size(), tokens * top_k, "[T, top_k]");
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) fail("logits", "contains NaN at flat index " + str(i));
  }
  for (std::size_t t = 0; t < tokens; ++t) {
    const float* l = logits.data() + t * num_experts;
    int32_t* id = ids.data() + t * top_k;
    float* w = weights.data() + t * top_k;
    // Selection: k passes of "largest not yet taken, lowest index on ties".
    for (std::size_t j = 0; j < top_k; ++j) {
      int32_t best = -1;
      for (std::size_t e = 0; e < num_experts; ++e) {
        bool taken = false;
        for (std::size_t i = 0; i < j; ++i) taken = taken || id[i] == static_cast<int32_t>(e);
        if (!taken && (best < 0 || l[e] > l[best])) best = static_cast<int32_t>(e);
      }
      id[j] = best;
    }
    const float top = l[id[0]];
    float sum = 0.0f;
    for (std::size_t j = 0; j < top_k; ++j) {
      w[j] = expf(l[id[j]] - top);
      sum += w[j];
    }
    for (std::size_t j = 0; j < top_k; ++j) w[j] = w[j] / sum;
  }
}

void nvfp4_linear(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& lw,
                  Activation act, Span<uint16_t> y) {
  const Nvfp4Weights& w = lw.weight;
  check_weights("weight", w);
  if (w.count != 1) fail("weight", "must hold one matrix, got " + str(w.count));
  check_scale("weight_scale_2", lw.weight_scale_2);
  if (act == Activation::kW4A4) check_scale("input_scale", lw.input_scale);
  const std::size_t N = w.rows, K = w.cols;
  check_size("x", x.size(), rows * K, "[M, K=" + str(K) + "]");
  check_size("y", y.size(), rows * N, "[M, N=" + str(N) + "]");
  std::vector<float> wq(N * K), xf(K), xa(K);
  dequantize_rows(w, 0, 0, N, wq.data());
  const float alpha =
      act == Activation::kW4A4 ? lw.input_scale * lw.weight_scale_2 : lw.weight_scale_2;
  for (std::size_t m = 0; m < rows; ++m) {
    bf16_row(x.data() + m * K, K, xf.data());
    prepare_activation(xf.data(), K, act, lw.input_scale, xa.data());
    for (std::size_t n = 0; n < N; ++n) {
      y[m * N + n] = fp4::float_to_bf16(alpha * dot_fixed_order(xa.data(), wq.data() + n * K, K));
    }
  }
}

void nvfp4_moe(Span<const uint16_t> hidden, Span<const float> router_logits, std::size_t tokens,
               std::size_t top_k, const MoeExperts& ex, const SharedExpert* shared,
               Activation act, Span<uint16_t> out) {
  check_experts(ex, act);
  if (shared != nullptr) check_shared(*shared, ex.hidden, act);
  const std::size_t E = ex.num_experts, H = ex.hidden, I = ex.intermediate;
  check_top_k(top_k, E);
  check_size("hidden", hidden.size(), tokens * H, "[T, H=" + str(H) + "]");
  check_size("router_logits", router_logits.size(), tokens * E, "[T, E=" + str(E) + "]");
  check_size("out", out.size(), tokens * H, "[T, H=" + str(H) + "]");
  if (tokens == 0) return;

  std::vector<int32_t> ids(tokens * top_k);
  std::vector<float> weights(tokens * top_k);
  route(router_logits, tokens, E, top_k, ids, weights);

  // Routed experts, one expert at a time (its weights dequantized once): y[t * top_k + j].
  std::vector<float> y(tokens * top_k * H);
  std::vector<float> gate_up(2 * I * H), down(H * I);
  std::vector<float> xf(H), xa(H), a(I), aq(I);
  const bool w4a4 = act == Activation::kW4A4;
  for (std::size_t e = 0; e < E; ++e) {
    bool used = false;
    for (std::size_t i = 0; i < ids.size() && !used; ++i) used = ids[i] == static_cast<int32_t>(e);
    if (!used) continue;
    dequantize_rows(ex.gate_up, e, 0, 2 * I, gate_up.data());
    dequantize_rows(ex.down, e, 0, H, down.data());
    const float gis = w4a4 ? ex.gate_up_input_scale[e] : 1.0f;
    const float dis = w4a4 ? ex.down_input_scale[e] : 1.0f;
    const DenseMlp m{gate_up.data(), gate_up.data() + I * H, down.data(),
                     gis * ex.gate_up_scale_2[2 * e], gis * ex.gate_up_scale_2[2 * e + 1],
                     dis * ex.down_scale_2[e], gis, dis, H, I};
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] != static_cast<int32_t>(e)) continue;
      bf16_row(hidden.data() + (i / top_k) * H, H, xf.data());
      mlp_row(m, xf.data(), act, xa, a, aq, y.data() + i * H);
    }
  }

  // Shared expert and its per-token gate.
  std::vector<float> ys, shared_gate;
  if (shared != nullptr) {
    const std::size_t Is = shared->gate.weight.rows;
    std::vector<float> sg(Is * H), su(Is * H), sd(H * Is), sgw(H), sa(Is), saq(Is);
    dequantize_rows(shared->gate.weight, 0, 0, Is, sg.data());
    dequantize_rows(shared->up.weight, 0, 0, Is, su.data());
    dequantize_rows(shared->down.weight, 0, 0, H, sd.data());
    bf16_row(shared->gate_weight.data(), H, sgw.data());
    const float gis = w4a4 ? shared->gate.input_scale : 1.0f;
    const float dis = w4a4 ? shared->down.input_scale : 1.0f;
    // Gate and up read the same activations; W4A4 quantizes them once, with gate's input_scale
    // (ModelOpt exports equal input scales for layers that read the same input).
    const DenseMlp m{sg.data(), su.data(), sd.data(),
                     gis * shared->gate.weight_scale_2, gis * shared->up.weight_scale_2,
                     dis * shared->down.weight_scale_2, gis, dis, H, Is};
    ys.resize(tokens * H);
    shared_gate.resize(tokens);
    for (std::size_t t = 0; t < tokens; ++t) {
      bf16_row(hidden.data() + t * H, H, xf.data());
      mlp_row(m, xf.data(), act, xa, sa, saq, ys.data() + t * H);
      shared_gate[t] = math::sigmoid(dot_fixed_order(xf.data(), sgw.data(), H));
    }
  }

  // Weighted combine in rank order, then the shared term.
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (std::size_t j = 0; j < top_k; ++j) acc += weights[t * top_k + j] * y[(t * top_k + j) * H + h];
      if (shared != nullptr) acc += shared_gate[t] * ys[t * H + h];
      out[t * H + h] = fp4::float_to_bf16(acc);
    }
  }
}

}  // namespace qwen35_trt::moe
