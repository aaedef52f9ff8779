// ctest for the Gated DeltaNet CPU reference (qwen35_trt/gdn.h): the chunked and recurrent forms
// against a direct token-by-token recurrence in double precision written here from the math,
// on random shapes and variable-length batches; continuation (prefill + prefill, prefill +
// decodes); slot pools in arbitrary order; the causal conv; argument validation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "qwen35_trt/cpu.h"
#include "qwen35_trt/gdn.h"

namespace gdn = qwen35_trt::gdn;

namespace {

std::mt19937 rng(1234);

std::vector<float> randn(std::size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    if (!std::isfinite(got[i])) return INFINITY;
    num += d * d;
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<int32_t> cu_of(const std::vector<int>& lens) {
  std::vector<int32_t> cu(lens.size() + 1, 0);
  for (std::size_t i = 0; i < lens.size(); ++i) cu[i + 1] = cu[i] + lens[i];
  return cu;
}

// A random GDN problem with fused gates in fp32.
struct Problem {
  int Hk, Hv, dk, dv, slots;
  std::vector<int> lens;
  std::vector<float> q, k, v, a, b, A_log, dt_bias, pool;
  std::vector<int32_t> slot_ids;
  std::vector<uint8_t> has_init;
  int tokens() const { return std::accumulate(lens.begin(), lens.end(), 0); }
};

Problem make_problem(int Hk, int Hv, int dk, int dv, std::vector<int> lens, int extra_slots) {
  Problem p{Hk, Hv, dk, dv, static_cast<int>(lens.size()) + extra_slots, lens, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  const int T = p.tokens();
  p.q = randn(static_cast<std::size_t>(T) * Hk * dk);
  p.k = randn(static_cast<std::size_t>(T) * Hk * dk);
  p.v = randn(static_cast<std::size_t>(T) * Hv * dv);
  p.a = randn(static_cast<std::size_t>(T) * Hv, 1.0f);
  p.b = randn(static_cast<std::size_t>(T) * Hv, 1.5f);
  // A_log around log(0.05 .. 5): decays from very slow to fast, as in trained models.
  p.A_log = randn(Hv, 1.0f, -0.5f);
  p.A_log[0] = -8.0f;  // one head with almost no decay: long-range terms inside a chunk matter
  p.dt_bias = randn(Hv, 0.5f);
  p.pool = randn(static_cast<std::size_t>(p.slots) * Hv * dk * dv, 0.3f);
  // Slots in a scrambled order; some sequences start fresh.
  std::vector<int32_t> all(p.slots);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  p.slot_ids.assign(all.begin(), all.begin() + lens.size());
  for (std::size_t i = 0; i < lens.size(); ++i) p.has_init.push_back(static_cast<uint8_t>(i % 3 != 1));
  return p;
}

// The definition, in double: outputs [T, Hv, dv] and the pool after the call.
void direct_recurrence(const Problem& p, const std::vector<int32_t>& cu, bool decode, float scale,
                       std::vector<double>& o, std::vector<double>& pool) {
  const int T = p.tokens();
  const int G = p.Hv / p.Hk;
  o.assign(static_cast<std::size_t>(T) * p.Hv * p.dv, 0.0);
  pool.assign(p.pool.begin(), p.pool.end());
  std::vector<double> S(static_cast<std::size_t>(p.dk) * p.dv), q(p.dk), k(p.dk), u(p.dv);
  for (std::size_t s = 0; s < p.lens.size(); ++s) {
    const bool init = decode || p.has_init[s];
    for (int h = 0; h < p.Hv; ++h) {
      double* slot = pool.data() + ((static_cast<std::size_t>(p.slot_ids[s]) * p.Hv + h) * p.dk * p.dv);
      for (std::size_t x = 0; x < S.size(); ++x) S[x] = init ? slot[x] : 0.0;
      const int hk = h / G;
      for (int t = cu[s]; t < cu[s + 1]; ++t) {
        double qq = 0, kk = 0;
        for (int e = 0; e < p.dk; ++e) {
          q[e] = p.q[(static_cast<std::size_t>(t) * p.Hk + hk) * p.dk + e];
          k[e] = p.k[(static_cast<std::size_t>(t) * p.Hk + hk) * p.dk + e];
          qq += q[e] * q[e];
          kk += k[e] * k[e];
        }
        for (int e = 0; e < p.dk; ++e) {
          q[e] = q[e] / std::sqrt(qq + 1e-6) * scale;
          k[e] = k[e] / std::sqrt(kk + 1e-6);
        }
        const double x = p.a[t * p.Hv + h] + double{p.dt_bias[h]};
        const double softplus = x > 20 ? x : std::log1p(std::exp(x));
        const double g = -std::exp(double{p.A_log[h]}) * softplus;
        const double beta = 1.0 / (1.0 + std::exp(-double{p.b[t * p.Hv + h]}));
        for (double& sv : S) sv *= std::exp(g);
        for (int j = 0; j < p.dv; ++j) {
          double pred = 0;
          for (int e = 0; e < p.dk; ++e) pred += S[e * p.dv + j] * k[e];
          u[j] = beta * (p.v[(static_cast<std::size_t>(t) * p.Hv + h) * p.dv + j] - pred);
        }
        for (int e = 0; e < p.dk; ++e)
          for (int j = 0; j < p.dv; ++j) S[e * p.dv + j] += k[e] * u[j];
        for (int j = 0; j < p.dv; ++j) {
          double acc = 0;
          for (int e = 0; e < p.dk; ++e) acc += S[e * p.dv + j] * q[e];
          o[(static_cast<std::size_t>(t) * p.Hv + h) * p.dv + j] = acc;
        }
      }
      for (std::size_t x = 0; x < S.size(); ++x) slot[x] = S[x];
    }
  }
}

gdn::GatedDeltaNetArgs<float> args_of(const Problem& p, std::vector<float>& pool, const std::vector<int32_t>& cu,
                                      std::vector<float>& o, bool decode) {
  gdn::GatedDeltaNetArgs<float> a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.a = p.a;
  a.b = p.b;
  a.A_log = p.A_log;
  a.dt_bias = p.dt_bias;
  a.state_pool = pool;
  a.seqs.slots = p.slot_ids;
  if (!decode) {
    a.seqs.cu_seqlens = cu;
    a.seqs.has_initial_state = p.has_init;
  }
  a.o = o;
  a.num_k_heads = p.Hk;
  a.num_v_heads = p.Hv;
  a.head_k_dim = p.dk;
  a.head_v_dim = p.dv;
  a.scale = 1.0f / std::sqrt(static_cast<float>(p.dk));
  return a;
}

void check_gdn_case(int Hk, int Hv, int dk, int dv, const std::vector<int>& lens) {
  Problem p = make_problem(Hk, Hv, dk, dv, lens, 2);
  const auto cu = cu_of(lens);
  std::vector<double> o_ref, pool_ref;
  direct_recurrence(p, cu, false, 1.0f / std::sqrt(static_cast<float>(dk)), o_ref, pool_ref);
  std::string lens_s;
  for (int n : lens) lens_s += std::to_string(n) + ",";
  for (auto alg : {gdn::Algorithm::kChunked, gdn::Algorithm::kRecurrent}) {
    std::vector<float> pool = p.pool, o(o_ref.size(), NAN);
    auto a = args_of(p, pool, cu, o, false);
    a.algorithm = alg;
    gdn::gated_delta_net(a);
    const std::string where = "Hk " + std::to_string(Hk) + " Hv " + std::to_string(Hv) + " dk " + std::to_string(dk) +
                              " dv " + std::to_string(dv) + " lens " + lens_s +
                              (alg == gdn::Algorithm::kChunked ? " chunked" : " recurrent");
    const double eo = rel_error(o, o_ref), es = rel_error(pool, pool_ref);
    CHECK_MSG(eo < 2e-5, where + ": output rel error " + std::to_string(eo));
    CHECK_MSG(es < 2e-5, where + ": state rel error " + std::to_string(es));
  }
}

// prefill(A) then prefill(B) == prefill(A + B); prefill(A) then decodes == prefill(all).
void check_continuation() {
  const int Hk = 2, Hv = 4, dk = 16, dv = 24;
  const int n1 = 70, n2 = 61, nd = 5;
  Problem full = make_problem(Hk, Hv, dk, dv, {n1 + n2 + nd}, 0);
  full.has_init = {0};
  const auto cu_full = cu_of(full.lens);
  std::vector<float> pool_full = full.pool, o_full(static_cast<std::size_t>(full.tokens()) * Hv * dv);
  gdn::gated_delta_net(args_of(full, pool_full, cu_full, o_full, false));

  // The same tokens in pieces.
  auto piece = [&](int t0, int n) {
    Problem p = full;
    p.lens = {n};
    auto cut = [&](const std::vector<float>& x, std::size_t per) {
      return std::vector<float>(x.begin() + t0 * per, x.begin() + (t0 + n) * per);
    };
    p.q = cut(full.q, Hk * dk);
    p.k = cut(full.k, Hk * dk);
    p.v = cut(full.v, static_cast<std::size_t>(Hv) * dv);
    p.a = cut(full.a, Hv);
    p.b = cut(full.b, Hv);
    return p;
  };
  std::vector<float> pool = full.pool, o;
  std::vector<float> o_pieces;
  int t = 0;
  for (int n : {n1, n2}) {
    Problem p = piece(t, n);
    p.has_init = {static_cast<uint8_t>(t > 0)};
    o.assign(static_cast<std::size_t>(n) * Hv * dv, NAN);
    gdn::gated_delta_net(args_of(p, pool, cu_of({n}), o, false));
    o_pieces.insert(o_pieces.end(), o.begin(), o.end());
    t += n;
  }
  for (int i = 0; i < nd; ++i, ++t) {
    Problem p = piece(t, 1);
    o.assign(static_cast<std::size_t>(Hv) * dv, NAN);
    gdn::gated_delta_net(args_of(p, pool, {}, o, true));
    o_pieces.insert(o_pieces.end(), o.begin(), o.end());
  }
  std::vector<double> want(o_full.begin(), o_full.end()), want_pool(pool_full.begin(), pool_full.end());
  CHECK_MSG(rel_error(o_pieces, want) < 1e-5, "continuation output " + std::to_string(rel_error(o_pieces, want)));
  CHECK_MSG(rel_error(pool, want_pool) < 1e-5, "continuation state " + std::to_string(rel_error(pool, want_pool)));
}

// Decode form against the direct recurrence, slots scrambled; untouched slots stay untouched.
void check_decode() {
  Problem p = make_problem(2, 6, 32, 16, std::vector<int>(5, 1), 3);
  const auto cu = cu_of(p.lens);
  std::vector<double> o_ref, pool_ref;
  direct_recurrence(p, cu, true, 1.0f / std::sqrt(32.0f), o_ref, pool_ref);
  std::vector<float> pool = p.pool, o(o_ref.size(), NAN);
  gdn::gated_delta_net(args_of(p, pool, cu, o, true));
  CHECK_MSG(rel_error(o, o_ref) < 2e-5, "decode output " + std::to_string(rel_error(o, o_ref)));
  CHECK_MSG(rel_error(pool, pool_ref) < 2e-5, "decode state");
  const std::size_t per = static_cast<std::size_t>(p.Hv) * p.dk * p.dv;
  for (int s = 0; s < p.slots; ++s) {
    if (std::find(p.slot_ids.begin(), p.slot_ids.end(), s) != p.slot_ids.end()) continue;
    CHECK_MSG(std::equal(pool.begin() + s * per, pool.begin() + (s + 1) * per, p.pool.begin() + s * per),
              "slot " + std::to_string(s) + " not in the batch was modified");
  }
}

// bf16 inputs: the same function to bf16 accuracy, and beta rounded to bf16.
void check_bf16() {
  Problem p = make_problem(2, 4, 32, 32, {37, 80}, 1);
  auto to_bf16 = [](std::vector<float>& x) {
    std::vector<uint16_t> bits(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      bits[i] = qwen35_trt::nvfp4::float_to_bf16(x[i]);
      x[i] = qwen35_trt::nvfp4::bf16_to_float(bits[i]);  // the fp32 run sees the same values
    }
    return bits;
  };
  const auto qb = to_bf16(p.q), kb = to_bf16(p.k), vb = to_bf16(p.v), ab = to_bf16(p.a), bb = to_bf16(p.b);
  const auto cu = cu_of(p.lens);
  std::vector<double> o_ref, pool_ref;
  direct_recurrence(p, cu, false, 1.0f / std::sqrt(32.0f), o_ref, pool_ref);
  gdn::GatedDeltaNetArgs<uint16_t> a;
  a.q = qb;
  a.k = kb;
  a.v = vb;
  a.a = ab;
  a.b = bb;
  a.A_log = p.A_log;
  a.dt_bias = p.dt_bias;
  std::vector<float> pool = p.pool;
  a.state_pool = pool;
  a.seqs.slots = p.slot_ids;
  a.seqs.cu_seqlens = cu;
  a.seqs.has_initial_state = p.has_init;
  std::vector<uint16_t> ob(o_ref.size());
  a.o = ob;
  a.num_k_heads = 2;
  a.num_v_heads = 4;
  a.head_k_dim = 32;
  a.head_v_dim = 32;
  a.scale = 1.0f / std::sqrt(32.0f);
  gdn::gated_delta_net(a);
  std::vector<float> o(ob.size());
  for (std::size_t i = 0; i < ob.size(); ++i) o[i] = qwen35_trt::nvfp4::bf16_to_float(ob[i]);
  // bf16 beta and bf16 output rounding: well under 1e-2.
  const double e = rel_error(o, o_ref);
  CHECK_MSG(e < 1e-2 && e > 0, "bf16 output rel error " + std::to_string(e));
  CHECK_MSG(rel_error(pool, pool_ref) < 1e-2, "bf16 state rel error");
}

// The (sequence, head) tasks over 1 or 3 threads, chunked and recurrent: the same bits (the
// problem is large enough for the split to happen).
void check_threads() {
  Problem p = make_problem(2, 8, 64, 64, {70, 1, 129}, 1);
  const auto cu = cu_of(p.lens);
  for (const auto algorithm : {gdn::Algorithm::kChunked, gdn::Algorithm::kRecurrent}) {
    std::vector<std::vector<float>> outs, pools;
    for (const std::size_t threads : {std::size_t{1}, std::size_t{3}}) {
      qwen35_trt::cpu::set_num_threads(threads);
      pools.push_back(p.pool);
      outs.emplace_back(static_cast<std::size_t>(cu.back()) * 8 * 64);
      gdn::GatedDeltaNetArgs<float> a = args_of(p, pools.back(), cu, outs.back(), false);
      a.algorithm = algorithm;
      gdn::gated_delta_net(a);
    }
    CHECK_MSG(outs[0] == outs[1] && pools[0] == pools[1], "gated_delta_net: 3 threads give other bits than 1");
  }
  qwen35_trt::cpu::set_num_threads(1);
}

void check_bad_arguments() {
  Problem p = make_problem(2, 4, 8, 8, {3, 2}, 1);
  auto cu = cu_of(p.lens);
  std::vector<float> pool = p.pool, o(static_cast<std::size_t>(p.tokens()) * p.Hv * p.dv);
  auto good = args_of(p, pool, cu, o, false);
  gdn::gated_delta_net(good);  // sanity: valid call passes

  std::vector<int32_t> zero_len = {0, 3, 3};
  auto a = good;
  a.seqs.cu_seqlens = zero_len;
  CHECK_THROWS(gdn::gated_delta_net(a), "cu_seqlens: sequence 1 has length 0");
  std::vector<int32_t> short_cu = {0, 3, 4};
  a = good;
  a.seqs.cu_seqlens = short_cu;
  CHECK_THROWS(gdn::gated_delta_net(a), "cu_seqlens: last entry 4");
  std::vector<int32_t> bad_slots = {0, 3};
  a = good;
  a.seqs.slots = bad_slots;
  CHECK_THROWS(gdn::gated_delta_net(a), "slots: slot 3 of sequence 1 is out of range [0, 3)");
  std::vector<int32_t> neg_slots = {-1, 0};
  a.seqs.slots = neg_slots;
  CHECK_THROWS(gdn::gated_delta_net(a), "slots: slot -1");
  std::vector<int32_t> dup_slots = {1, 1};
  a.seqs.slots = dup_slots;
  CHECK_THROWS(gdn::gated_delta_net(a), "slots: slot 1 is used by two sequences");
  a = good;
  a.num_k_heads = 3;
  CHECK_THROWS(gdn::gated_delta_net(a), "num_v_heads: must be a multiple of num_k_heads");
  a = good;
  a.num_k_heads = 1;  // q/k sizes no longer match
  CHECK_THROWS(gdn::gated_delta_net(a), "q: expected");
  a = good;
  a.scale = 0.0f;
  CHECK_THROWS(gdn::gated_delta_net(a), "scale:");
  a = good;
  std::vector<float> g(p.tokens() * p.Hv);
  a.g = g;
  a.beta = g;
  CHECK_THROWS(gdn::gated_delta_net(a), "either the fused gates");
  a = good;
  std::vector<uint8_t> short_init = {1};
  a.seqs.has_initial_state = short_init;
  CHECK_THROWS(gdn::gated_delta_net(a), "has_initial_state");
  a = good;
  a.seqs.cu_seqlens = {};
  a.seqs.has_initial_state = {};
  CHECK_THROWS(gdn::gated_delta_net(a), "slots: decode (no cu_seqlens) takes one token per sequence");
  a = good;
  a.state_pool = {pool.data(), pool.size() - 1};
  CHECK_THROWS(gdn::gated_delta_net(a), "state_pool:");
  a = good;
  a.seqs.slots = {};
  CHECK_THROWS(gdn::gated_delta_net(a), "slots: at least one sequence");
}

// ---------------------------------------------------------------------------------------------
// CausalConv1d

void check_conv_case(int C, int W, const std::vector<int>& lens) {
  const auto cu = cu_of(lens);
  const int T = cu.back(), B = static_cast<int>(lens.size()), slots = B + 2;
  const int H = W - 1;
  auto x = randn(static_cast<std::size_t>(T) * C), w = randn(static_cast<std::size_t>(C) * W, 0.5f);
  auto pool = randn(static_cast<std::size_t>(slots) * C * H);
  std::vector<int32_t> slot_ids(B);
  for (int i = 0; i < B; ++i) slot_ids[i] = (i * 5 + 1) % slots;  // distinct: gcd(5, slots) == 1 here
  std::vector<uint8_t> init(B);
  for (int i = 0; i < B; ++i) init[i] = static_cast<uint8_t>(i % 2);
  // Direct formula in double.
  std::vector<double> y_ref(static_cast<std::size_t>(T) * C), pool_ref(pool.begin(), pool.end());
  for (int s = 0; s < B; ++s) {
    const int n = lens[s];
    for (int c = 0; c < C; ++c) {
      auto h = [&](int i) -> double {  // i-th input of the history, i in [-H, n)
        if (i >= 0) return x[(static_cast<std::size_t>(cu[s]) + i) * C + c];
        return init[s] ? pool[(static_cast<std::size_t>(slot_ids[s]) * C + c) * H + (H + i)] : 0.0;
      };
      for (int t = 0; t < n; ++t) {
        double acc = 0;
        for (int j = 0; j < W; ++j) acc += w[static_cast<std::size_t>(c) * W + j] * h(t - H + j);
        y_ref[(static_cast<std::size_t>(cu[s]) + t) * C + c] = acc / (1 + std::exp(-acc));
      }
      for (int j = 0; j < H; ++j) pool_ref[(static_cast<std::size_t>(slot_ids[s]) * C + c) * H + j] = h(n - H + j);
    }
  }
  std::vector<float> y(y_ref.size(), NAN);
  gdn::CausalConv1dArgs<float> a;
  a.x = x;
  a.weight = w;
  a.state_pool = pool;
  a.seqs.slots = slot_ids;
  a.seqs.cu_seqlens = cu;
  a.seqs.has_initial_state = init;
  a.y = y;
  a.channels = C;
  a.width = W;
  gdn::causal_conv1d(a);
  std::string where = "conv C " + std::to_string(C) + " W " + std::to_string(W) + " B " + std::to_string(B);
  CHECK_MSG(rel_error(y, y_ref) < 1e-6, where + ": y rel error " + std::to_string(rel_error(y, y_ref)));
  CHECK_MSG(rel_error(pool, pool_ref) == 0.0, where + ": state");
}

void check_conv_decode_and_errors() {
  // Decode == prefill of one token with initial state.
  const int C = 24, W = 4, B = 3, slots = 5;
  auto x = randn(B * C), w = randn(C * W);
  auto pool0 = randn(slots * C * (W - 1));
  std::vector<int32_t> slot_ids = {4, 0, 2};
  std::vector<float> pa = pool0, pb = pool0, ya(B * C), yb(B * C);
  gdn::CausalConv1dArgs<float> a;
  a.x = x;
  a.weight = w;
  a.state_pool = pa;
  a.seqs.slots = slot_ids;
  a.y = ya;
  a.channels = C;
  a.width = W;
  gdn::causal_conv1d(a);
  std::vector<int32_t> cu = {0, 1, 2, 3};
  std::vector<uint8_t> ones = {1, 1, 1};
  auto b = a;
  b.state_pool = pb;
  b.y = yb;
  b.seqs.cu_seqlens = cu;
  b.seqs.has_initial_state = ones;
  gdn::causal_conv1d(b);
  CHECK(ya == yb);
  CHECK(pa == pb);

  auto bad = b;
  bad.width = 1;
  CHECK_THROWS(gdn::causal_conv1d(bad), "width: must be in [2, 8]");
  bad = b;
  std::vector<int32_t> zero = {0, 1, 1, 3};
  bad.seqs.cu_seqlens = zero;
  CHECK_THROWS(gdn::causal_conv1d(bad), "cu_seqlens: sequence 1 has length 0");
  bad = b;
  std::vector<int32_t> oob = {4, 0, 5};
  bad.seqs.slots = oob;
  CHECK_THROWS(gdn::causal_conv1d(bad), "slots: slot 5 of sequence 2 is out of range [0, 5)");
  bad = b;
  bad.weight = {w.data(), w.size() - 1};
  CHECK_THROWS(gdn::causal_conv1d(bad), "weight:");
  bad = a;
  bad.seqs.has_initial_state = ones;
  CHECK_THROWS(gdn::causal_conv1d(bad), "has_initial_state: must be empty for decode");
}

}  // namespace

int main() {
  // Random shapes, including lengths around the chunk size and a long sequence.
  check_gdn_case(1, 1, 8, 8, {1});
  check_gdn_case(2, 4, 16, 24, {1, 2, 63, 64, 65, 127});
  check_gdn_case(3, 6, 32, 16, {200, 5});
  check_gdn_case(4, 4, 24, 40, {130});
  std::uniform_int_distribution<int> len(1, 150), heads(1, 3), dim(1, 5);
  for (int r = 0; r < 4; ++r) {
    const int Hk = heads(rng), G = heads(rng);
    std::vector<int> lens(heads(rng));
    for (int& n : lens) n = len(rng);
    check_gdn_case(Hk, Hk * G, 8 * dim(rng), 8 * dim(rng), lens);
  }
  check_continuation();
  check_decode();
  check_bf16();
  check_threads();
  check_bad_arguments();

  check_conv_case(16, 4, {1, 2, 3, 9});
  check_conv_case(40, 2, {5, 1});
  check_conv_case(8, 8, {3, 20});
  check_conv_decode_and_errors();
  return qwen35_trt::test::report();
}
