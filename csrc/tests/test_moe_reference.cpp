// ctest for the Nvfp4Linear / Nvfp4MoE CPU reference (qwen35_trt/moe.h) against an independent
// dequantize-then-matmul in double precision, plus routing rules, layouts, batch invariance, edge
// shapes and argument validation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/nvfp4.h"

namespace fp4 = qwen35_trt::nvfp4;
namespace mo = qwen35_trt::moe;
using qwen35_trt::Span;

namespace {

std::mt19937 rng(7);

uint16_t bf16(double v) { return fp4::float_to_bf16(static_cast<float>(v)); }
double from_bf16(uint16_t b) { return fp4::bf16_to_float(b); }
double round_bf16(double v) { return from_bf16(bf16(v)); }

std::vector<uint16_t> random_bf16(std::size_t n, double scale = 1.0) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = bf16(d(rng));
  return v;
}

// A random NVFP4 matrix set [count, rows, cols] with scales in [2^-3, 2^3] (row-major).
struct RandomWeights {
  std::size_t count, rows, cols;
  std::vector<uint8_t> packed, scales;
};

RandomWeights random_weights(std::size_t count, std::size_t rows, std::size_t cols) {
  RandomWeights w{count, rows, cols, std::vector<uint8_t>(count * rows * cols / 2),
                  std::vector<uint8_t>(count * rows * cols / 16)};
  for (auto& b : w.packed) b = static_cast<uint8_t>(rng());
  std::uniform_int_distribution<int> e(4, 10), m(0, 7);
  for (auto& s : w.scales) s = static_cast<uint8_t>((e(rng) << 3) | m(rng));
  return w;
}

// Row-major scales -> the swizzled layout, matrix by matrix.
std::vector<uint8_t> swizzled(const RandomWeights& w) {
  const std::size_t blocks = w.cols / 16, per = mo::scale_bytes(mo::ScaleLayout::kSwizzled128x4, w.rows, w.cols);
  std::vector<uint8_t> out(w.count * per);
  for (std::size_t i = 0; i < w.count; ++i) {
    fp4::swizzle_scales_128x4({w.scales.data() + i * w.rows * blocks, w.rows * blocks}, w.rows, blocks,
                              {out.data() + i * per, per});
  }
  return out;
}

mo::Nvfp4Weights view(const RandomWeights& w, const std::vector<uint8_t>* scales = nullptr,
                      mo::ScaleLayout layout = mo::ScaleLayout::kRowMajor) {
  mo::Nvfp4Weights v;
  v.packed = {w.packed.data(), w.packed.size()};
  const auto& s = scales ? *scales : w.scales;
  v.scales = {s.data(), s.size()};
  v.layout = layout;
  v.count = w.count;
  v.rows = w.rows;
  v.cols = w.cols;
  return v;
}

// W[index][r][c] in double, global scale included.
double weight_at(const RandomWeights& w, std::size_t index, std::size_t r, std::size_t c, double s2) {
  const uint8_t byte = w.packed[(index * w.rows + r) * (w.cols / 2) + c / 2];
  const double code = fp4::decode_e2m1(static_cast<uint8_t>(c % 2 ? byte >> 4 : byte & 0xF));
  return code * fp4::decode_e4m3(w.scales[(index * w.rows + r) * (w.cols / 16) + c / 16]) * s2;
}

// |got - want| within one bf16 rounding of want plus fp32 accumulation error of `mag` (sum |x w|).
bool close(double got, double want, double mag, std::size_t k) {
  const double ulp = std::ldexp(1.0, std::ilogb(std::max({std::fabs(want), std::fabs(got), 1e-30})) - 7);
  return std::fabs(got - want) <= 0.5 * ulp + 4.0 * k * 6e-8 * mag + 1e-30;
}

double rel_err(const std::vector<uint16_t>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = from_bf16(got[i]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

void test_route() {
  // Ties go to the lower index; weights are the softmax over the selected logits.
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f, 0.5f, 3.0f};
  std::vector<int32_t> ids(3);
  std::vector<float> w(3);
  mo::route(logits, 1, 6, 3, ids, w);
  CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == 5);
  CHECK(std::fabs(w[0] - 1.0f / 3) < 1e-7f && std::fabs(w[2] - 1.0f / 3) < 1e-7f);

  std::normal_distribution<float> d(0.0f, 2.0f);
  for (std::size_t E : {1u, 6u, 64u, 256u}) {
    for (std::size_t k : {1u, 2u, 8u}) {
      if (k > E) continue;
      const std::size_t T = 17;
      std::vector<float> l(T * E);
      for (auto& v : l) v = d(rng);
      std::vector<int32_t> id(T * k);
      std::vector<float> wt(T * k);
      mo::route(l, T, E, k, id, wt);
      for (std::size_t t = 0; t < T; ++t) {
        // Independent: sort indices by (logit desc, index asc).
        std::vector<int> order(E);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[t * E + a] > l[t * E + b]; });
        double z = 0;
        for (std::size_t j = 0; j < k; ++j) z += std::exp(static_cast<double>(l[t * E + order[j]]));
        double sum = 0;
        for (std::size_t j = 0; j < k; ++j) {
          CHECK_MSG(id[t * k + j] == order[j], "E=" + std::to_string(E) + " k=" + std::to_string(k));
          const double want = std::exp(static_cast<double>(l[t * E + order[j]])) / z;
          CHECK(std::fabs(wt[t * k + j] - want) <= 1e-6 * std::max(want, 1e-3));
          sum += wt[t * k + j];
        }
        CHECK(std::fabs(sum - 1.0) < 1e-5);
      }
    }
  }
  std::vector<int32_t> id(2);
  std::vector<float> wt(2);
  CHECK_THROWS(mo::route(logits, 1, 6, 0, id, wt), "top_k");
  CHECK_THROWS(mo::route(logits, 1, 6, 7, id, wt), "top_k");
  CHECK_THROWS(mo::route(logits, 1, 6, 3, id, wt), "ids");
  std::vector<float> nan = {1.0f, NAN};
  CHECK_THROWS(mo::route(nan, 1, 2, 2, id, wt), "logits");
}

void test_linear(std::size_t M, std::size_t N, std::size_t K, mo::Activation act) {
  const RandomWeights w = random_weights(1, N, K);
  const auto x = random_bf16(M * K);
  const float s2 = 0.0123f, is = 0.0371f;
  std::vector<uint16_t> y(M * N), y_sw(M * N);
  mo::nvfp4_linear(x, M, {view(w), s2, is}, act, y);
  const auto sw = swizzled(w);
  mo::nvfp4_linear(x, M, {view(w, &sw, mo::ScaleLayout::kSwizzled128x4), s2, is}, act, y_sw);
  CHECK_MSG(y == y_sw, "swizzled scales give the same result");

  std::size_t bad = 0;
  std::vector<float> xr(K), xq(K);
  for (std::size_t m = 0; m < M; ++m) {
    for (std::size_t k = 0; k < K; ++k) xr[k] = fp4::bf16_to_float(x[m * K + k]);
    for (std::size_t b = 0; b < K; b += 16) {
      if (act == mo::Activation::kW4A4) {
        mo::quantize_activation_block(xr.data() + b, is, xq.data() + b);
      } else {
        std::copy(xr.begin() + b, xr.begin() + b + 16, xq.begin() + b);
      }
    }
    const double alpha = act == mo::Activation::kW4A4 ? static_cast<double>(is) : 1.0;
    for (std::size_t n = 0; n < N; ++n) {
      double want = 0, mag = 0;
      for (std::size_t k = 0; k < K; ++k) {
        const double p = xq[k] * weight_at(w, 0, n, k, s2);
        want += p;
        mag += std::fabs(p);
      }
      bad += !close(from_bf16(y[m * N + n]), alpha * want, alpha * mag, K);
    }
  }
  CHECK_MSG(bad == 0, "linear M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                          std::to_string(K) + (act == mo::Activation::kW4A4 ? " w4a4" : " w4a16") +
                          ": " + std::to_string(bad) + " outputs off");
}

// W4A4 activation quantization against the rule written out in double.
void test_activation_quantization() {
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::size_t bad = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    float x[16], xq[16];
    for (auto& v : x) v = d(rng);
    if (trial % 7 == 0) std::fill(x, x + 16, 0.0f);
    const float is = trial % 3 ? 0.02f : 1e-4f;
    mo::quantize_activation_block(x, is, xq);
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    float s = amax / (6.0f * is);
    s = std::min(std::max(s, 0.001953125f), 448.0f);
    const float sa = fp4::decode_e4m3(fp4::encode_e4m3(s));
    for (int i = 0; i < 16; ++i) {
      // Nearest E2M1 value of x / (sa * is), by search over the 8 magnitudes.
      const double q = std::fabs(x[i] / (sa * is));
      const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
      int best = 0;
      for (int c = 1; c < 8; ++c) {
        const double dc = std::fabs(q - mags[c]), db = std::fabs(q - mags[best]);
        if (dc < db || (dc == db && c % 2 == 0)) best = c;
      }
      const double want = (x[i] < 0 ? -1 : 1) * mags[best] * sa;
      bad += std::fabs(xq[i] - want) > 0;
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " activation quantization mismatches");
}

struct MoeCase {
  std::size_t T, E, k, H, I, Is;  // Is = 0: no shared expert
  mo::Activation act = mo::Activation::kW4A16;
  int force_expert = -1;          // >= 0: every token's top-1 logit is this expert
  mo::ScaleLayout layout = mo::ScaleLayout::kRowMajor;
};

struct MoeData {
  RandomWeights gate_up, down, sg, su, sd;
  std::vector<uint8_t> gate_up_sc, down_sc, sg_sc, su_sc, sd_sc;  // in the case's layout
  std::vector<float> gu_s2, dn_s2, gu_is, dn_is, logits;
  std::vector<uint16_t> x, shared_gate;
  float s2[3] = {0.011f, 0.013f, 0.017f}, is[3] = {0.021f, 0.021f, 0.05f};
  mo::MoeExperts ex;
  mo::SharedExpert sh;
};

void make_moe(const MoeCase& c, MoeData& d) {
  d.gate_up = random_weights(c.E, 2 * c.I, c.H);
  d.down = random_weights(c.E, c.H, c.I);
  std::uniform_real_distribution<float> u(0.005f, 0.02f);
  for (std::size_t e = 0; e < c.E; ++e) {
    d.gu_s2.push_back(u(rng));
    d.gu_s2.push_back(u(rng));
    d.dn_s2.push_back(u(rng));
    d.gu_is.push_back(u(rng) * 3);
    d.dn_is.push_back(u(rng));
  }
  d.x = random_bf16(c.T * c.H);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  d.logits.resize(c.T * c.E);
  for (auto& v : d.logits) v = nd(rng);
  if (c.force_expert >= 0) {
    for (std::size_t t = 0; t < c.T; ++t) d.logits[t * c.E + c.force_expert] = 100.0f;
  }
  const bool sw = c.layout == mo::ScaleLayout::kSwizzled128x4;
  d.gate_up_sc = sw ? swizzled(d.gate_up) : d.gate_up.scales;
  d.down_sc = sw ? swizzled(d.down) : d.down.scales;
  d.ex.num_experts = c.E;
  d.ex.hidden = c.H;
  d.ex.intermediate = c.I;
  d.ex.gate_up = view(d.gate_up, &d.gate_up_sc, c.layout);
  d.ex.down = view(d.down, &d.down_sc, c.layout);
  d.ex.gate_up_scale_2 = {d.gu_s2.data(), d.gu_s2.size()};
  d.ex.down_scale_2 = {d.dn_s2.data(), d.dn_s2.size()};
  d.ex.gate_up_input_scale = {d.gu_is.data(), d.gu_is.size()};
  d.ex.down_input_scale = {d.dn_is.data(), d.dn_is.size()};
  if (c.Is) {
    d.sg = random_weights(1, c.Is, c.H);
    d.su = random_weights(1, c.Is, c.H);
    d.sd = random_weights(1, c.H, c.Is);
    d.sg_sc = sw ? swizzled(d.sg) : d.sg.scales;
    d.su_sc = sw ? swizzled(d.su) : d.su.scales;
    d.sd_sc = sw ? swizzled(d.sd) : d.sd.scales;
    d.shared_gate = random_bf16(c.H, 0.1);
    d.sh.gate = {view(d.sg, &d.sg_sc, c.layout), d.s2[0], d.is[0]};
    d.sh.up = {view(d.su, &d.su_sc, c.layout), d.s2[1], d.is[1]};
    d.sh.down = {view(d.sd, &d.sd_sc, c.layout), d.s2[2], d.is[2]};
    d.sh.gate_weight = {d.shared_gate.data(), d.shared_gate.size()};
  }
}

// One SwiGLU MLP in double (bf16 rounding of a and y as the contract says).
std::vector<double> mlp_double(const std::vector<double>& x, const RandomWeights& gu, std::size_t gu_index,
                               std::size_t gate_row0, std::size_t up_row0, const RandomWeights* up_w,
                               double s2g, double s2u, const RandomWeights& dn, std::size_t dn_index,
                               double s2d, std::size_t H, std::size_t I) {
  std::vector<double> a(I), y(H);
  const RandomWeights& uw = up_w ? *up_w : gu;
  for (std::size_t n = 0; n < I; ++n) {
    double g = 0, u = 0;
    for (std::size_t k = 0; k < H; ++k) {
      g += x[k] * weight_at(gu, gu_index, gate_row0 + n, k, s2g);
      u += x[k] * weight_at(uw, up_w ? 0 : gu_index, up_row0 + n, k, s2u);
    }
    a[n] = round_bf16(g / (1.0 + std::exp(-g)) * u);
  }
  for (std::size_t h = 0; h < H; ++h) {
    double s = 0;
    for (std::size_t n = 0; n < I; ++n) s += a[n] * weight_at(dn, dn_index, h, n, s2d);
    y[h] = round_bf16(s);
  }
  return y;
}

void test_moe(const MoeCase& c) {
  MoeData d;
  make_moe(c, d);
  std::vector<uint16_t> out(c.T * c.H);
  mo::nvfp4_moe(d.x, d.logits, c.T, c.k, d.ex, c.Is ? &d.sh : nullptr, c.act, out);
  const std::string what = "moe T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " k=" +
                           std::to_string(c.k) + " H=" + std::to_string(c.H) + " I=" +
                           std::to_string(c.I) + " Is=" + std::to_string(c.Is) +
                           (c.layout == mo::ScaleLayout::kRowMajor ? "" : " swizzled");

  // Batch invariance: each token alone gives bit-identical output.
  std::size_t differ = 0;
  for (std::size_t t = 0; t < c.T; t += std::max<std::size_t>(1, c.T / 5)) {
    std::vector<uint16_t> one(c.H);
    mo::nvfp4_moe({d.x.data() + t * c.H, c.H}, {d.logits.data() + t * c.E, c.E}, 1, c.k, d.ex,
                  c.Is ? &d.sh : nullptr, c.act, one);
    differ += !std::equal(one.begin(), one.end(), out.begin() + t * c.H);
  }
  CHECK_MSG(differ == 0, what + ": output depends on the batch");
  if (c.act == mo::Activation::kW4A4) return;  // W4A4 numerics are checked by test_linear

  // Dequantize-then-matmul in double.
  std::vector<double> want(c.T * c.H);
  std::vector<int32_t> ids(c.T * c.k);
  std::vector<float> w(c.T * c.k);
  mo::route(d.logits, c.T, c.E, c.k, ids, w);
  for (std::size_t t = 0; t < c.T; ++t) {
    std::vector<double> x(c.H);
    for (std::size_t h = 0; h < c.H; ++h) x[h] = from_bf16(d.x[t * c.H + h]);
    std::vector<double> acc(c.H, 0.0);
    for (std::size_t j = 0; j < c.k; ++j) {
      const std::size_t e = ids[t * c.k + j];
      const auto y = mlp_double(x, d.gate_up, e, 0, c.I, nullptr, d.gu_s2[2 * e], d.gu_s2[2 * e + 1],
                                d.down, e, d.dn_s2[e], c.H, c.I);
      for (std::size_t h = 0; h < c.H; ++h) acc[h] += w[t * c.k + j] * y[h];
    }
    if (c.Is) {
      const auto y = mlp_double(x, d.sg, 0, 0, 0, &d.su, d.s2[0], d.s2[1], d.sd, 0, d.s2[2], c.H, c.Is);
      double z = 0;
      for (std::size_t h = 0; h < c.H; ++h) z += x[h] * from_bf16(d.shared_gate[h]);
      for (std::size_t h = 0; h < c.H; ++h) acc[h] += y[h] / (1.0 + std::exp(-z));
    }
    for (std::size_t h = 0; h < c.H; ++h) want[t * c.H + h] = acc[h];
  }
  const double err = rel_err(out, want);
  CHECK_MSG(err < 4e-3, what + ": relative error " + std::to_string(err));
}

void test_moe_errors() {
  MoeCase c{3, 4, 2, 32, 16, 16};
  MoeData d;
  make_moe(c, d);
  std::vector<uint16_t> out(c.T * c.H);
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 5, d.ex, nullptr, c.act, out), "top_k");
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T + 1, 2, d.ex, nullptr, c.act, out), "hidden");
  auto ex = d.ex;
  ex.gate_up_scale_2 = {d.gu_s2.data(), 3};
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, ex, nullptr, c.act, out), "gate_up.weight_scale_2");
  ex = d.ex;
  ex.intermediate = 8;
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, ex, nullptr, c.act, out), "intermediate");
  ex = d.ex;
  ex.down.packed = {ex.down.packed.data(), ex.down.packed.size() - 1};
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, ex, nullptr, c.act, out), "down");
  ex = d.ex;
  ex.gate_up_input_scale = {};
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, ex, nullptr, mo::Activation::kW4A4, out),
               "gate_up.input_scale");
  std::vector<float> bad_s2 = d.dn_s2;
  bad_s2[1] = 0.0f;
  ex = d.ex;
  ex.down_scale_2 = {bad_s2.data(), bad_s2.size()};
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, ex, nullptr, c.act, out), "down.weight_scale_2");
  auto sh = d.sh;
  sh.gate_weight = {};
  CHECK_THROWS(mo::nvfp4_moe(d.x, d.logits, c.T, 2, d.ex, &sh, c.act, out), "shared.gate_weight");
  // Linear: K not a multiple of 16, wrong x size.
  const RandomWeights w = random_weights(1, 4, 32);
  mo::Nvfp4Weights v = view(w);
  std::vector<uint16_t> x(64), y(8);
  CHECK_THROWS(mo::nvfp4_linear(x, 2, {v, 1.0f, 1.0f}, mo::Activation::kW4A16, {y.data(), 7}), "y");
  v.cols = 24;
  CHECK_THROWS(mo::nvfp4_linear(x, 2, {v, 1.0f, 1.0f}, mo::Activation::kW4A16, y), "cols");
  CHECK_THROWS(mo::nvfp4_linear(x, 2, {view(w), -1.0f, 1.0f}, mo::Activation::kW4A16, y), "weight_scale_2");
  CHECK_THROWS(mo::nvfp4_linear(x, 2, {view(w), 1.0f, 0.0f}, mo::Activation::kW4A4, y), "input_scale");
  // T = 0 is fine.
  std::vector<uint16_t> none;
  mo::nvfp4_moe({}, {}, 0, 2, d.ex, &d.sh, c.act, none);
  CHECK(true);
}

}  // namespace

int main() {
  test_route();
  test_activation_quantization();
  for (auto act : {mo::Activation::kW4A16, mo::Activation::kW4A4}) {
    test_linear(1, 1, 16, act);     // smallest legal shape
    test_linear(3, 5, 48, act);     // K not a multiple of 32 or 64
    test_linear(17, 130, 256, act); // N past a 128-row swizzle tile
  }
  test_moe({1, 8, 2, 64, 32, 32});                   // single token
  test_moe({13, 8, 2, 128, 32, 0});                  // no shared expert; some experts get no tokens
  test_moe({9, 6, 3, 96, 48, 64});                   // the "wide" tiny shapes
  test_moe({20, 16, 4, 64, 32, 32, mo::Activation::kW4A16, 5});  // all tokens on expert 5
  test_moe({7, 4, 4, 32, 16, 16});                   // top_k == E
  test_moe({11, 8, 2, 64, 32, 48, mo::Activation::kW4A16, -1, mo::ScaleLayout::kSwizzled128x4});
  test_moe({5, 8, 2, 64, 32, 32, mo::Activation::kW4A4});
  test_moe_errors();
  return qwen35_trt::test::report();
}
