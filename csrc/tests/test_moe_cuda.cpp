// ctest for the Nvfp4MoE / Nvfp4Linear CUDA kernels against the CPU reference (qwen35_trt/moe.h):
// random shapes including empty experts, one expert taking every token, a single token, token
// counts that are not tile multiples, the smallest K and N, the three weight layouts, the shared
// expert, poisoned outputs (every element must be written) and batch invariance (a token's output
// is bit-identical alone and inside a batch). Exits 77 (ctest SKIP_RETURN_CODE) without a GPU.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_test_util.h"
#include "qwen35_trt/common/w4a16_fragments.h"
#include "qwen35_trt/kernels/moe.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/nvfp4.h"

namespace fp4 = qwen35_trt::nvfp4;
namespace kn = qwen35_trt::kernels;
namespace mo = qwen35_trt::moe;

namespace {

std::mt19937 rng(11);

// A device copy that frees itself.
template <typename T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  Dev() = default;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T) + 256));
    if (n) CUDA_OK(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  explicit Dev(std::size_t count, uint8_t poison) : n(count) {
    CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T) + 256));
    CUDA_OK(cudaMemset(p, poison, n * sizeof(T) + 256));
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    if (n) CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
};

std::vector<uint16_t> random_bf16(std::size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = fp4::float_to_bf16(d(rng));
  return v;
}

// count x [rows, cols] NVFP4 in `layout` (packed, scales: what the kernels read) and in ModelOpt's
// order with row-major scales (ref_packed, ref_scales: what the CPU reference reads).
struct Weights {
  std::size_t count, rows, cols;
  mo::ScaleLayout layout;
  std::vector<uint8_t> packed, scales, ref_packed, ref_scales;
};

Weights random_weights(std::size_t count, std::size_t rows, std::size_t cols, mo::ScaleLayout layout) {
  Weights w{count, rows, cols, layout, std::vector<uint8_t>(count * rows * cols / 2), {}, {}, {}};
  for (auto& b : w.packed) b = static_cast<uint8_t>(rng());
  const std::size_t blocks = cols / 16;
  std::vector<uint8_t> plain(count * rows * blocks);
  std::uniform_int_distribution<int> e(4, 10), m(0, 7);
  for (auto& s : plain) s = static_cast<uint8_t>((e(rng) << 3) | m(rng));
  w.ref_packed = w.packed;
  w.ref_scales = plain;
  const std::size_t per = mo::scale_bytes(layout, rows, cols);
  w.scales.assign(count * per, 0);
  if (layout == mo::ScaleLayout::kW4A16Fragments) {
    for (std::size_t r = 0; r < count * rows; ++r) {
      CHECK(fp4::pack_fragment_row(&w.ref_packed[r * cols / 2], &plain[r * blocks], cols,
                                   &w.packed[r * cols / 2], &w.scales[r * blocks], nullptr));
    }
    return w;
  }
  for (std::size_t i = 0; i < count; ++i) {
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t b = 0; b < blocks; ++b) {
        w.scales[i * per + mo::scale_offset(layout, r, b, blocks)] = plain[(i * rows + r) * blocks + b];
      }
    }
  }
  return w;
}

mo::Nvfp4Weights ref_view(const Weights& w) {
  mo::Nvfp4Weights v;
  v.packed = {w.ref_packed.data(), w.ref_packed.size()};
  v.scales = {w.ref_scales.data(), w.ref_scales.size()};
  v.layout = mo::ScaleLayout::kRowMajor;
  v.count = w.count;
  v.rows = w.rows;
  v.cols = w.cols;
  return v;
}

struct DevWeights {
  Dev<uint8_t> packed, scales;
  explicit DevWeights(const Weights& w) : packed(w.packed), scales(w.scales) {}
  kn::Nvfp4DeviceWeights view(const Weights& w, const float* global, int32_t global_stride,
                              const float* input, int32_t row_offset = 0) const {
    kn::Nvfp4DeviceWeights d;
    d.packed = packed.p;
    d.scales = scales.p;
    d.global_scale = global;
    d.input_scale = input;
    d.packed_stride = static_cast<int64_t>(w.rows * w.cols / 2);
    d.scale_stride = static_cast<int64_t>(mo::scale_bytes(w.layout, w.rows, w.cols));
    d.global_stride = global_stride;
    d.input_stride = 1;
    d.row_offset = row_offset;
    d.layout = w.layout;
    return d;
  }
};

// ||got - want|| / ||want|| over bf16 outputs; also counts non-finite outputs (poison left over).
double rel_err(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, std::size_t& bad) {
  double num = 0, den = 0;
  bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = fp4::bf16_to_float(got[i]), w = fp4::bf16_to_float(want[i]);
    if (!std::isfinite(g)) {
      ++bad;
      continue;
    }
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / (den > 0 ? den : 1e-300));
}

void test_linear(std::size_t M, std::size_t N, std::size_t K, mo::ScaleLayout layout) {
  const Weights w = random_weights(1, N, K, layout);
  const auto x = random_bf16(M * K);
  const float s2 = 0.0137f;
  std::vector<uint16_t> want(M * N);
  mo::nvfp4_linear(x, M, {ref_view(w), s2, 0.0f}, mo::Activation::kW4A16, want);

  DevWeights dw(w);
  Dev<uint16_t> dx(x), dy(M * N, 0xFF);
  Dev<float> ds2(std::vector<float>{s2});
  kn::Nvfp4LinearParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(dx.p);
  p.y = reinterpret_cast<__nv_bfloat16*>(dy.p);
  p.rows = static_cast<int64_t>(M);
  p.n = static_cast<int32_t>(N);
  p.k = static_cast<int32_t>(K);
  p.w = dw.view(w, ds2.p, 0, nullptr);
  p.backend = kn::Nvfp4Backend::kW4A16;
  CUDA_OK(kn::nvfp4_linear(p, nullptr, 0, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::size_t bad = 0;
  const double err = rel_err(dy.host(), want, bad);
  const std::string what = "linear M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                           std::to_string(K) + (layout == mo::ScaleLayout::kRowMajor ? "" : layout == mo::ScaleLayout::kSwizzled128x4 ? " swizzled" : " fragments");
  CHECK_MSG(bad == 0 && err < 2e-3, what + ": rel err " + std::to_string(err) + ", " +
                                        std::to_string(bad) + " unwritten/non-finite");
}

struct MoeCase {
  int T, E, k, H, I, Is;
  mo::ScaleLayout layout = mo::ScaleLayout::kRowMajor;
  int force_expert = -1;
};

void test_moe(const MoeCase& c) {
  const auto layout = c.layout;
  const Weights gu = random_weights(c.E, 2 * c.I, c.H, layout);
  const Weights dn = random_weights(c.E, c.H, c.I, layout);
  std::uniform_real_distribution<float> u(0.005f, 0.02f);
  std::vector<float> gu_s2(2 * c.E), dn_s2(c.E);
  for (auto& v : gu_s2) v = u(rng);
  for (auto& v : dn_s2) v = u(rng);
  const auto x = random_bf16(static_cast<std::size_t>(c.T) * c.H);
  std::vector<float> logits(static_cast<std::size_t>(c.T) * c.E);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : logits) v = nd(rng);
  if (c.force_expert >= 0) {
    for (int t = 0; t < c.T; ++t) logits[static_cast<std::size_t>(t) * c.E + c.force_expert] = 50.0f;
  }
  const Weights sg = random_weights(1, c.Is ? c.Is : 16, c.H, layout);
  const Weights su = random_weights(1, c.Is ? c.Is : 16, c.H, layout);
  const Weights sd = random_weights(1, c.H, c.Is ? c.Is : 16, layout);
  const std::vector<float> sh_s2 = {0.011f, 0.013f, 0.017f};
  const auto shared_gate = random_bf16(c.H, 0.1f);

  // CPU reference.
  mo::MoeExperts ex;
  ex.num_experts = c.E;
  ex.hidden = c.H;
  ex.intermediate = c.I;
  ex.gate_up = ref_view(gu);
  ex.down = ref_view(dn);
  ex.gate_up_scale_2 = {gu_s2.data(), gu_s2.size()};
  ex.down_scale_2 = {dn_s2.data(), dn_s2.size()};
  mo::SharedExpert sh;
  sh.gate = {ref_view(sg), sh_s2[0], 0.0f};
  sh.up = {ref_view(su), sh_s2[1], 0.0f};
  sh.down = {ref_view(sd), sh_s2[2], 0.0f};
  sh.gate_weight = {shared_gate.data(), shared_gate.size()};
  std::vector<uint16_t> want(static_cast<std::size_t>(c.T) * c.H);
  mo::nvfp4_moe(x, logits, c.T, c.k, ex, c.Is ? &sh : nullptr, mo::Activation::kW4A16, want);
  std::vector<int32_t> want_ids(static_cast<std::size_t>(c.T) * c.k);
  std::vector<float> want_w(want_ids.size());
  mo::route(logits, c.T, c.E, c.k, want_ids, want_w);

  // Device.
  DevWeights dgu(gu), ddn(dn), dsg(sg), dsu(su), dsd(sd);
  Dev<float> dgu_s2(gu_s2), ddn_s2(dn_s2), dsh_s2(sh_s2), dlogits(logits);
  Dev<uint16_t> dx(x), dgate(shared_gate);
  kn::Nvfp4MoeParams p;
  p.hidden = reinterpret_cast<const __nv_bfloat16*>(dx.p);
  p.router_logits = dlogits.p;
  p.router_logits_bf16 = false;
  p.tokens = c.T;
  p.hidden_size = c.H;
  p.intermediate = c.I;
  p.num_experts = c.E;
  p.top_k = c.k;
  p.gate = dgu.view(gu, dgu_s2.p, 2, nullptr, 0);
  p.up = dgu.view(gu, dgu_s2.p + 1, 2, nullptr, c.I);
  p.down = ddn.view(dn, ddn_s2.p, 1, nullptr);
  p.shared_intermediate = c.Is;
  p.shared_gate = dsg.view(sg, dsh_s2.p, 0, nullptr);
  p.shared_up = dsu.view(su, dsh_s2.p + 1, 0, nullptr);
  p.shared_down = dsd.view(sd, dsh_s2.p + 2, 0, nullptr);
  p.shared_gate_weight = reinterpret_cast<const __nv_bfloat16*>(dgate.p);
  p.backend = kn::Nvfp4Backend::kW4A16;
  Dev<int32_t> dids(want_ids.size(), 0xFF);
  Dev<float> dw(want_w.size(), 0xFF);
  p.topk_ids = dids.p;
  p.topk_weights = dw.p;

  auto run = [&](const kn::Nvfp4MoeParams& q, std::size_t outputs) {
    Dev<uint16_t> out(outputs, 0xFF);  // poison: NaN bf16
    auto qq = q;
    qq.out = reinterpret_cast<__nv_bfloat16*>(out.p);
    const std::size_t ws_bytes = kn::nvfp4_moe_workspace_size(qq);
    Dev<uint8_t> ws(ws_bytes, 0xFF);
    CUDA_OK(kn::nvfp4_moe(qq, ws.p, ws_bytes, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    return out.host();
  };
  const auto got = run(p, want.size());
  const std::string what = "moe T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " k=" +
                           std::to_string(c.k) + " H=" + std::to_string(c.H) + " I=" + std::to_string(c.I) +
                           " Is=" + std::to_string(c.Is) + (layout == mo::ScaleLayout::kRowMajor ? "" : layout == mo::ScaleLayout::kSwizzled128x4 ? " swizzled" : " fragments") +
                           (c.force_expert >= 0 ? " one-expert" : "");
  CHECK_MSG(dids.host() == want_ids, what + ": routing ids differ");
  const auto gw = dw.host();
  double werr = 0;
  for (std::size_t i = 0; i < gw.size(); ++i) werr = std::max(werr, std::fabs(double(gw[i]) - want_w[i]));
  CHECK_MSG(werr < 1e-6, what + ": routing weights differ by " + std::to_string(werr));
  std::size_t bad = 0;
  const double err = rel_err(got, want, bad);
  CHECK_MSG(bad == 0 && err < 1e-2, what + ": rel err " + std::to_string(err) + ", " +
                                        std::to_string(bad) + " unwritten/non-finite");

  // Batch invariance: the last token alone (a different tile height and permutation).
  if (c.T > 1) {
    auto q = p;
    const int t = c.T - 1;
    q.hidden = p.hidden + static_cast<std::size_t>(t) * c.H;
    q.router_logits = dlogits.p + static_cast<std::size_t>(t) * c.E;
    q.tokens = 1;
    q.topk_ids = nullptr;
    q.topk_weights = nullptr;
    const auto one = run(q, c.H);
    bool same = true;
    for (int h = 0; h < c.H; ++h) same = same && one[h] == got[static_cast<std::size_t>(t) * c.H + h];
    CHECK_MSG(same, what + ": the last token's output changes when it runs alone");
  }
}

void test_invalid() {
  kn::Nvfp4LinearParams p;
  p.rows = 4;
  p.n = 8;
  p.k = 24;  // not a multiple of 16
  CHECK(kn::nvfp4_linear(p, nullptr, 0, nullptr) == cudaErrorInvalidValue);
  kn::Nvfp4MoeParams m;
  m.tokens = 1;
  m.num_experts = 4;
  m.top_k = 5;
  m.hidden_size = 32;
  m.intermediate = 16;
  CHECK(kn::nvfp4_moe_workspace_size(m) == 0);
  CHECK(kn::nvfp4_moe(m, nullptr, 0, nullptr) == cudaErrorInvalidValue);
}

}  // namespace

int main() {
  if (!qwen35_trt::testing::have_cuda_device()) return qwen35_trt::testing::kSkip;
  std::printf("native NVFP4 path compiled: %d, usable: %d\n", kn::nvfp4_native_compiled(),
              kn::nvfp4_native_available(0));
  const auto sw = mo::ScaleLayout::kSwizzled128x4;
  test_linear(1, 1, 16, mo::ScaleLayout::kRowMajor);  // smallest K and N (8-byte weight chunks)
  test_linear(5, 3, 48, mo::ScaleLayout::kRowMajor);  // K % 64 != 0: byte-wise scale loads
  test_linear(33, 130, 96, sw);
  const auto fr = mo::ScaleLayout::kW4A16Fragments;  // sm_90 / sm_120 engines
  test_linear(5, 3, 48, fr);                           // a partial group only
  test_linear(33, 130, 96, fr);                        // a full group and a partial one
  // MOE_CUDA_TEST_QUICK=1 (compute-sanitizer runs): only the small cases.
  const bool quick = std::getenv("MOE_CUDA_TEST_QUICK") != nullptr;
  test_linear(300, 200, 256, mo::ScaleLayout::kRowMajor);  // medium tiles, N not a tile multiple
  if (!quick) test_linear(1000, 64, 512, sw);              // large tiles
  test_moe({1, 8, 2, 64, 32, 32});                         // single token, empty experts
  test_moe({13, 8, 2, 128, 32, 0});
  test_moe({9, 6, 3, 96, 48, 64});                         // the tiny "wide" shapes
  test_moe({37, 16, 4, 64, 32, 32, mo::ScaleLayout::kRowMajor, 3});  // every token on expert 3
  test_moe({200, 32, 8, 256, 64, 64, sw});                 // medium tiles
  test_moe({200, 32, 8, 256, 64, 64, fr});
  test_moe({1, 8, 2, 64, 32, 32, fr});
  if (!quick) {
    test_moe({700, 16, 4, 256, 128, 128});                 // large tiles
    test_moe({64, 256, 8, 2048, 512, 512});                // 35B shapes
    test_moe({64, 256, 8, 2048, 512, 512, fr});
    test_moe({1000, 64, 8, 2048, 512, 512, fr});           // prefill tiles at 35B widths
  }
  test_invalid();
  return qwen35_trt::test::report();
}
