// Random Gated DeltaNet test cases and their C++-reference results, shared by the CUDA test
// (test_gdn_cuda, real kernels on a GPU) and the emulated one (test_gdn_emulated, the kernel
// source on the CPU), so both check the kernels on the same kind of inputs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "qwen35_trt/gdn.h"
#include "qwen35_trt/nvfp4.h"

namespace qwen35_trt::testing {

// Seeded random inputs (each test executable picks its own seed).
struct Random {
  std::mt19937 rng;
  explicit Random(unsigned seed) : rng(seed) {}

  std::vector<uint16_t> randn_bf16(std::size_t n, float scale = 1.0f, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, scale);
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = nvfp4::float_to_bf16(d(rng));
    return v;
  }
  std::vector<float> randn_f32(std::size_t n, float scale = 1.0f, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  }
  // ``batch`` distinct slots out of ``num_slots``, in a scrambled order.
  std::vector<int32_t> scrambled_slots(int batch, int num_slots) {
    std::vector<int32_t> all(num_slots);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    return {all.begin(), all.begin() + batch};
  }
};

inline float to_f(uint16_t b) { return nvfp4::bf16_to_float(b); }
inline float to_f(float x) { return x; }

// ||got - want|| / ||want||; infinite when ``got`` has a non-finite value.
template <typename A, typename B>
double rel_error(const std::vector<A>& got, const std::vector<B>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = to_f(got[i]), w = to_f(want[i]);
    if (!std::isfinite(g)) return INFINITY;
    num += (g - w) * (g - w);
    den += w * w;
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

inline std::vector<int32_t> cu_of(const std::vector<int>& lens) {
  std::vector<int32_t> cu(lens.size() + 1, 0);
  for (std::size_t i = 0; i < lens.size(); ++i) cu[i + 1] = cu[i] + lens[i];
  return cu;
}

// One GatedDeltaNet call: bf16 q/k/v/a/b, fp32 A_log/dt_bias and state pool, 2 spare slots.
struct GdnCase {
  int Hk, Hv, dk, dv, slots;
  std::vector<int> lens;
  bool decode;
  std::vector<uint16_t> q, k, v, a, b;
  std::vector<float> A_log, dt_bias, pool;
  std::vector<int32_t> slot_ids, cu;
  std::vector<uint8_t> init;
  int T() const { return cu.back(); }
};

inline GdnCase make_gdn_case(Random& r, int Hk, int Hv, int dk, int dv, std::vector<int> lens, bool decode) {
  GdnCase c{Hk, Hv, dk, dv, static_cast<int>(lens.size()) + 2, lens, decode, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  c.cu = cu_of(lens);
  const std::size_t T = c.cu.back();
  c.q = r.randn_bf16(T * Hk * dk);
  c.k = r.randn_bf16(T * Hk * dk);
  c.v = r.randn_bf16(T * Hv * dv);
  c.a = r.randn_bf16(T * Hv);
  c.b = r.randn_bf16(T * Hv, 1.5f);
  c.A_log = r.randn_f32(Hv, 1.0f, -0.5f);
  c.A_log[0] = -8.0f;  // one head with almost no decay: long-range terms inside a chunk matter
  c.dt_bias = r.randn_f32(Hv, 0.5f);
  c.pool = r.randn_f32(static_cast<std::size_t>(c.slots) * Hv * dk * dv, 0.3f);
  c.slot_ids = r.scrambled_slots(static_cast<int>(lens.size()), c.slots);
  for (std::size_t i = 0; i < lens.size(); ++i) c.init.push_back(decode ? 1 : static_cast<uint8_t>(i % 3 != 1));
  return c;
}

// The C++ reference on a case: outputs o [T, Hv, dv] and the state pool after the call.
inline void gdn_reference(const GdnCase& c, std::vector<uint16_t>& o, std::vector<float>& pool) {
  pool = c.pool;
  o.assign(static_cast<std::size_t>(c.T()) * c.Hv * c.dv, 0);
  gdn::GatedDeltaNetArgs<uint16_t> r;
  r.q = c.q;
  r.k = c.k;
  r.v = c.v;
  r.a = c.a;
  r.b = c.b;
  r.A_log = c.A_log;
  r.dt_bias = c.dt_bias;
  r.state_pool = pool;
  r.seqs.slots = c.slot_ids;
  if (!c.decode) {
    r.seqs.cu_seqlens = c.cu;
    r.seqs.has_initial_state = c.init;
  }
  r.o = o;
  r.num_k_heads = c.Hk;
  r.num_v_heads = c.Hv;
  r.head_k_dim = c.dk;
  r.head_v_dim = c.dv;
  r.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
  gdn::gated_delta_net(r);
}

}  // namespace qwen35_trt::testing
