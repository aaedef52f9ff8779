// CPU reference of Nvfp4Linear and Nvfp4MoE; the contract is in qwen35_trt/moe.h and docs/ops.md.
//
// Every dot product is accumulated the same way (dot_fixed_order in nvfp4_gemm.h), so a token's
// output never depends on the other tokens of the batch, on how the work is grouped by expert, on
// the ISA or on the thread count. The weights are decoded on the fly by the fused GEMM
// (nvfp4_gemm.h); moe_naive.cpp computes the same thing from full fp32 copies.
#include "qwen35_trt/moe.h"
#include "qwen35_trt/cpu.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe_detail.h"
#include "nvfp4_gemm.h"

namespace qwen35_trt::moe {
namespace {

namespace fp4 = qwen35_trt::nvfp4;

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
  if (w.layout == ScaleLayout::kW4A16Fragments) {
    fail(name, "the W4A16 fragment layout is read by the CUDA W4A16 GEMM only; convert the weights "
               "to ModelOpt's order first (qwen35_trt/common/w4a16_fragments.h)");
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

namespace detail {

void bf16_row(const uint16_t* x, std::size_t n, float* out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = fp4::bf16_to_float(x[i]);
}

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

void check_linear_call(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& lw,
                       Activation act, Span<uint16_t> y) {
  const Nvfp4Weights& w = lw.weight;
  check_weights("weight", w);
  if (w.count != 1) fail("weight", "must hold one matrix, got " + str(w.count));
  check_scale("weight_scale_2", lw.weight_scale_2);
  if (act == Activation::kW4A4) check_scale("input_scale", lw.input_scale);
  const std::size_t N = w.rows, K = w.cols;
  check_size("x", x.size(), rows * K, "[M, K=" + str(K) + "]");
  check_size("y", y.size(), rows * N, "[M, N=" + str(N) + "]");
}

void check_moe_call(Span<const uint16_t> hidden, Span<const float> router_logits,
                    std::size_t tokens, std::size_t top_k, const MoeExperts& ex,
                    const SharedExpert* shared, Activation act, Span<uint16_t> out) {
  check_experts(ex, act);
  if (shared != nullptr) check_shared(*shared, ex.hidden, act);
  const std::size_t E = ex.num_experts, H = ex.hidden;
  check_top_k(top_k, E);
  check_size("hidden", hidden.size(), tokens * H, "[T, H=" + str(H) + "]");
  check_size("router_logits", router_logits.size(), tokens * E, "[T, E=" + str(E) + "]");
  check_size("out", out.size(), tokens * H, "[T, H=" + str(H) + "]");
}

}  // namespace detail

namespace {

// A SwiGLU MLP over a batch of prepared activation rows (the fused form of the naive mlp_row):
// gate/up sums of `xa` [M, H], a = bf16(swiglu(gate_scale * g, up_scale * u)) [M, I], prepared
// for the down GEMM, whose sums are scaled and rounded into y (row j at y + dst[j] * H).
struct MlpScales {
  float gate, up, down;  // weight_scale_2 (times input_scale for W4A4)
  float down_input;      // W4A4: the down GEMM's input_scale
};

void swiglu_rows(const float* g, const float* u, std::size_t ld, std::size_t M, std::size_t I,
                 const MlpScales& s, Activation act, std::vector<float>& a, float* aq) {
  for (std::size_t j = 0; j < M; ++j) {
    for (std::size_t n = 0; n < I; ++n) {
      a[n] = math::round_bf16(math::swiglu(s.gate * g[j * ld + n], s.up * u[j * ld + n]));
    }
    detail::prepare_activation(a.data(), I, act, s.down_input, aq + j * I);
  }
}

}  // namespace

void nvfp4_linear(Span<const uint16_t> x, std::size_t rows, const Nvfp4LinearWeights& lw,
                  Activation act, Span<uint16_t> y) {
  detail::check_linear_call(x, rows, lw, act, y);
  const Nvfp4Weights& w = lw.weight;
  const std::size_t N = w.rows, K = w.cols;
  if (rows == 0) return;
  thread_local std::vector<float> xa_buf, sums_buf;  // see detail::Scratch
  detail::Scratch<float> xa_scratch(xa_buf), sums_scratch(sums_buf);
  std::vector<float> xf(K);
  float* xa = xa_scratch.get(rows * K);
  float* sums = sums_scratch.get(rows * N);
  for (std::size_t m = 0; m < rows; ++m) {
    detail::bf16_row(x.data() + m * K, K, xf.data());
    detail::prepare_activation(xf.data(), K, act, lw.input_scale, xa + m * K);
  }
  detail::nvfp4_gemm(w, 0, 0, N, xa, rows, sums, N);
  const float alpha =
      act == Activation::kW4A4 ? lw.input_scale * lw.weight_scale_2 : lw.weight_scale_2;
  for (std::size_t i = 0; i < rows * N; ++i) y[i] = fp4::float_to_bf16(alpha * sums[i]);
}

void nvfp4_moe(Span<const uint16_t> hidden, Span<const float> router_logits, std::size_t tokens,
               std::size_t top_k, const MoeExperts& ex, const SharedExpert* shared,
               Activation act, Span<uint16_t> out) {
  detail::check_moe_call(hidden, router_logits, tokens, top_k, ex, shared, act, out);
  const std::size_t E = ex.num_experts, H = ex.hidden, I = ex.intermediate;
  if (tokens == 0) return;

  std::vector<int32_t> ids(tokens * top_k);
  std::vector<float> weights(tokens * top_k);
  route(router_logits, tokens, E, top_k, ids, weights);

  // Routed experts, all of an expert's (token, rank) pairs in one GEMM per weight: y[t * top_k + j],
  // bf16-valued, kept as bf16 bits in a per-thread buffer (detail::Scratch). The experts are
  // tasks over the cpu:: thread pool (their GEMMs then run on the task's thread): each writes
  // only its own rows of y, so the split never changes a result.
  thread_local std::vector<uint16_t> y_buf;
  detail::Scratch<uint16_t> y_scratch(y_buf);
  uint16_t* y = y_scratch.get(tokens * top_k * H);
  std::vector<std::size_t> offsets(E + 1, 0), pairs(ids.size()), active;
  for (const int32_t id : ids) ++offsets[static_cast<std::size_t>(id) + 1];
  for (std::size_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  {
    std::vector<std::size_t> fill(offsets.begin(), offsets.end() - 1);
    for (std::size_t i = 0; i < ids.size(); ++i) pairs[fill[static_cast<std::size_t>(ids[i])]++] = i;
  }
  for (std::size_t e = 0; e < E; ++e) {
    if (offsets[e + 1] > offsets[e]) active.push_back(e);
  }
  const bool w4a4 = act == Activation::kW4A4;
  const auto run_expert = [&](std::size_t task) {
    thread_local std::vector<float> xf, xa, gu, a, aq, d;
    const std::size_t e = active[task];
    const std::size_t* rows = pairs.data() + offsets[e];
    const std::size_t M = offsets[e + 1] - offsets[e];
    const float gis = w4a4 ? ex.gate_up_input_scale[e] : 1.0f;
    const float dis = w4a4 ? ex.down_input_scale[e] : 1.0f;
    const MlpScales s{gis * ex.gate_up_scale_2[2 * e], gis * ex.gate_up_scale_2[2 * e + 1],
                      dis * ex.down_scale_2[e], dis};
    xf.resize(H);
    a.resize(I);
    xa.resize(M * H);
    for (std::size_t j = 0; j < M; ++j) {
      detail::bf16_row(hidden.data() + (rows[j] / top_k) * H, H, xf.data());
      detail::prepare_activation(xf.data(), H, act, gis, xa.data() + j * H);
    }
    gu.resize(M * 2 * I);
    detail::nvfp4_gemm(ex.gate_up, e, 0, 2 * I, xa.data(), M, gu.data(), 2 * I);
    aq.resize(M * I);
    swiglu_rows(gu.data(), gu.data() + I, 2 * I, M, I, s, act, a, aq.data());
    d.resize(M * H);
    detail::nvfp4_gemm(ex.down, e, 0, H, aq.data(), M, d.data(), H);
    for (std::size_t j = 0; j < M; ++j) {
      uint16_t* yj = y + rows[j] * H;
      for (std::size_t h = 0; h < H; ++h) yj[h] = fp4::float_to_bf16(s.down * d[j * H + h]);
    }
  };
  if (cpu::num_threads() > 1 && active.size() > 1) {
    cpu::parallel_for(active.size(), run_expert);
  } else {
    for (std::size_t task = 0; task < active.size(); ++task) run_expert(task);
  }

  // Shared expert and its per-token gate.
  std::vector<float> ys, shared_gate;
  if (shared != nullptr) {
    const std::size_t Is = shared->gate.weight.rows;
    std::vector<float> xf(H), xa, sgw(H), g(tokens * Is), u(tokens * Is), sa(Is), saq(tokens * Is);
    detail::bf16_row(shared->gate_weight.data(), H, sgw.data());
    const float gis = w4a4 ? shared->gate.input_scale : 1.0f;
    const float dis = w4a4 ? shared->down.input_scale : 1.0f;
    // Gate and up read the same activations; W4A4 quantizes them once, with gate's input_scale
    // (ModelOpt exports equal input scales for layers that read the same input).
    const MlpScales s{gis * shared->gate.weight_scale_2, gis * shared->up.weight_scale_2,
                      dis * shared->down.weight_scale_2, dis};
    shared_gate.resize(tokens);
    xa.resize(tokens * H);
    for (std::size_t t = 0; t < tokens; ++t) {
      detail::bf16_row(hidden.data() + t * H, H, xf.data());
      detail::prepare_activation(xf.data(), H, act, gis, xa.data() + t * H);
      shared_gate[t] = math::sigmoid(detail::dot_fixed_order(xf.data(), sgw.data(), H));
    }
    detail::nvfp4_gemm(shared->gate.weight, 0, 0, Is, xa.data(), tokens, g.data(), Is);
    detail::nvfp4_gemm(shared->up.weight, 0, 0, Is, xa.data(), tokens, u.data(), Is);
    swiglu_rows(g.data(), u.data(), Is, tokens, Is, s, act, sa, saq.data());
    ys.resize(tokens * H);
    detail::nvfp4_gemm(shared->down.weight, 0, 0, H, saq.data(), tokens, ys.data(), H);
    for (float& v : ys) v = math::round_bf16(s.down * v);
  }

  // Weighted combine in rank order, then the shared term.
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t h = 0; h < H; ++h) {
      float acc = 0.0f;
      for (std::size_t j = 0; j < top_k; ++j) acc += weights[t * top_k + j] * fp4::bf16_to_float(y[(t * top_k + j) * H + h]);
      if (shared != nullptr) acc += shared_gate[t] * ys[t * H + h];
      out[t * H + h] = fp4::float_to_bf16(acc);
    }
  }
}

}  // namespace qwen35_trt::moe
