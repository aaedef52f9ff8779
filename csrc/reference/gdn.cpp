// CPU reference of the Gated DeltaNet ops; the contracts are in gdn.h and docs/ops.md.
// Plain loops with fp32 arithmetic, one sequence and head at a time: readable, and fast enough
// to drive the CPU model of the tiny checkpoints.
#include "qwen35_trt/gdn.h"
#include "qwen35_trt/cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace qwen35_trt::gdn {
namespace {

[[noreturn]] void fail(const char* arg, const std::string& what) {
  throw std::invalid_argument(std::string(arg) + ": " + what);
}

// Element access for the two supported element types.
inline float load(float x) { return x; }
inline float load(uint16_t bits) { return nvfp4::bf16_to_float(bits); }
template <typename T>
inline T store(float x);
template <>
inline float store<float>(float x) { return x; }
template <>
inline uint16_t store<uint16_t>(float x) { return nvfp4::float_to_bf16(x); }
template <typename T>
constexpr bool is_bf16() { return std::is_same_v<T, uint16_t>; }

void check_positive(const char* arg, int64_t v) {
  if (v <= 0) fail(arg, "must be > 0, got " + std::to_string(v));
}

void check_size(const char* arg, std::size_t got, std::size_t expected, const std::string& shape) {
  if (got != expected) {
    std::ostringstream os;
    os << "expected " << expected << " elements (" << shape << "), got " << got;
    fail(arg, os.str());
  }
}

// A dimension product that must divide `total` exactly; returns total / unit.
std::size_t count_of(const char* arg, std::size_t total, std::size_t unit, const std::string& shape) {
  if (total % unit != 0 || total == 0) {
    std::ostringstream os;
    os << "expected a positive multiple of " << unit << " elements (" << shape << "), got " << total;
    fail(arg, os.str());
  }
  return total / unit;
}

// Validates the sequence description against `tokens` and `num_slots`; returns the token range
// of every sequence as offsets [B + 1] (decode: 0, 1, ..., B).
std::vector<int64_t> check_sequences(const SequenceBatch& s, std::size_t tokens, std::size_t num_slots) {
  const std::size_t B = s.slots.size();
  if (B == 0) fail("slots", "at least one sequence is required");
  std::vector<int64_t> cu(B + 1);
  const bool decode = s.cu_seqlens.size() == 0;
  if (decode) {
    if (s.has_initial_state.size() != 0) {
      fail("has_initial_state", "must be empty for decode (no cu_seqlens): decode always reads the state");
    }
    if (tokens != B) {
      fail("slots", "decode (no cu_seqlens) takes one token per sequence: " + std::to_string(tokens) +
                        " tokens but " + std::to_string(B) + " slots");
    }
    for (std::size_t i = 0; i <= B; ++i) cu[i] = static_cast<int64_t>(i);
  } else {
    check_size("cu_seqlens", s.cu_seqlens.size(), B + 1, "[B + 1], B = len(slots)");
    check_size("has_initial_state", s.has_initial_state.size(), B, "[B]");
    if (s.cu_seqlens[0] != 0) fail("cu_seqlens", "must start at 0, got " + std::to_string(s.cu_seqlens[0]));
    for (std::size_t i = 0; i < B; ++i) {
      if (s.cu_seqlens[i + 1] <= s.cu_seqlens[i]) {
        fail("cu_seqlens", "sequence " + std::to_string(i) + " has length " +
                               std::to_string(int64_t{s.cu_seqlens[i + 1]} - s.cu_seqlens[i]) +
                               " (every sequence needs at least one token)");
      }
    }
    if (static_cast<std::size_t>(s.cu_seqlens[B]) != tokens) {
      fail("cu_seqlens", "last entry " + std::to_string(s.cu_seqlens[B]) + " must equal the number of tokens " +
                             std::to_string(tokens));
    }
    for (std::size_t i = 0; i <= B; ++i) cu[i] = s.cu_seqlens[i];
  }
  std::vector<bool> seen(num_slots, false);
  for (std::size_t i = 0; i < B; ++i) {
    const int32_t slot = s.slots[i];
    if (slot < 0 || static_cast<std::size_t>(slot) >= num_slots) {
      fail("slots", "slot " + std::to_string(slot) + " of sequence " + std::to_string(i) + " is out of range [0, " +
                        std::to_string(num_slots) + ")");
    }
    if (seen[slot]) fail("slots", "slot " + std::to_string(slot) + " is used by two sequences");
    seen[slot] = true;
  }
  return cu;
}

bool reads_state(const SequenceBatch& s, std::size_t i) {
  return s.has_initial_state.size() == 0 || s.has_initial_state[i] != 0;
}

// ---------------------------------------------------------------------------------------------
// CausalConv1d

template <typename T>
void conv_impl(const CausalConv1dArgs<T>& a) {
  check_positive("channels", a.channels);
  if (a.width < 2 || a.width > kMaxConvWidth) {
    fail("width", "must be in [2, " + std::to_string(kMaxConvWidth) + "], got " + std::to_string(a.width));
  }
  const auto C = static_cast<std::size_t>(a.channels);
  const auto W = static_cast<std::size_t>(a.width);
  const std::size_t H = W - 1;  // history length
  const std::size_t tokens = count_of("x", a.x.size(), C, "[tokens, channels]");
  check_size("weight", a.weight.size(), C * W, "[channels, width]");
  check_size("y", a.y.size(), tokens * C, "[tokens, channels]");
  const std::size_t num_slots = count_of("state_pool", a.state_pool.size(), C * H, "[num_slots, channels, width - 1]");
  const std::vector<int64_t> cu = check_sequences(a.seqs, tokens, num_slots);

  std::vector<float> w(C * W), hist(C * H);
  for (std::size_t i = 0; i < C * W; ++i) w[i] = load(a.weight[i]);
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    T* state = a.state_pool.data() + static_cast<std::size_t>(a.seqs.slots[b]) * C * H;
    if (reads_state(a.seqs, b)) {
      for (std::size_t i = 0; i < C * H; ++i) hist[i] = load(state[i]);
    } else {
      std::fill(hist.begin(), hist.end(), 0.0f);
    }
    for (int64_t t = cu[b]; t < cu[b + 1]; ++t) {
      const T* xt = a.x.data() + static_cast<std::size_t>(t) * C;
      T* yt = a.y.data() + static_cast<std::size_t>(t) * C;
      for (std::size_t c = 0; c < C; ++c) {
        float* h = hist.data() + c * H;
        const float* wc = w.data() + c * W;
        const float xv = load(xt[c]);
        float acc = 0.0f;
        for (std::size_t j = 0; j < H; ++j) acc += wc[j] * h[j];
        acc += wc[H] * xv;
        yt[c] = store<T>(conv_epilogue(acc, is_bf16<T>()));
        for (std::size_t j = 0; j + 1 < H; ++j) h[j] = h[j + 1];
        h[H - 1] = xv;
      }
    }
    for (std::size_t i = 0; i < C * H; ++i) state[i] = store<T>(hist[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// GatedDeltaNet

struct Dims {
  std::size_t tokens, Hk, Hv, dk, dv, group, num_slots;
};

// One sequence's inputs for one value head, in fp32 with the gates applied: q (normalised,
// scaled), k (normalised), v, g, beta, each [n, d] row-major.
struct HeadInputs {
  std::vector<float> q, k, v, g, beta;
};

template <typename T>
void gather_head(const GatedDeltaNetArgs<T>& a, const Dims& d, int64_t t0, int64_t t1, std::size_t h,
                 HeadInputs& in) {
  const std::size_t n = static_cast<std::size_t>(t1 - t0);
  const std::size_t hk = h / d.group;
  in.q.resize(n * d.dk);
  in.k.resize(n * d.dk);
  in.v.resize(n * d.dv);
  in.g.resize(n);
  in.beta.resize(n);
  const bool fused = a.a.size() != 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t t = static_cast<std::size_t>(t0) + i;
    const T* q = a.q.data() + (t * d.Hk + hk) * d.dk;
    const T* k = a.k.data() + (t * d.Hk + hk) * d.dk;
    const T* v = a.v.data() + (t * d.Hv + h) * d.dv;
    float* qo = in.q.data() + i * d.dk;
    float* ko = in.k.data() + i * d.dk;
    float qq = 0.0f, kk = 0.0f;
    for (std::size_t e = 0; e < d.dk; ++e) {
      qo[e] = load(q[e]);
      ko[e] = load(k[e]);
      qq += qo[e] * qo[e];
      kk += ko[e] * ko[e];
    }
    const float qs = a.use_qk_l2norm ? 1.0f / std::sqrt(qq + kL2NormEps) : 1.0f;
    const float ks = a.use_qk_l2norm ? 1.0f / std::sqrt(kk + kL2NormEps) : 1.0f;
    for (std::size_t e = 0; e < d.dk; ++e) {
      // The spec normalises, then scales: (q * rsqrt(...)) * scale.
      qo[e] = (qo[e] * qs) * a.scale;
      ko[e] = ko[e] * ks;
    }
    for (std::size_t e = 0; e < d.dv; ++e) in.v[i * d.dv + e] = load(v[e]);
    if (fused) {
      in.g[i] = gate_log_decay(load(a.a[t * d.Hv + h]), a.A_log[h], a.dt_bias[h]);
      in.beta[i] = gate_beta(load(a.b[t * d.Hv + h]), is_bf16<T>());
    } else {
      in.g[i] = a.g[t * d.Hv + h];
      in.beta[i] = a.beta[t * d.Hv + h];
    }
  }
}

// Token by token; S [dk, dv] updated in place, o [n, dv].
void recurrent(const Dims& d, const HeadInputs& in, std::size_t n, float* S, float* o) {
  std::vector<float> u(d.dv);
  for (std::size_t i = 0; i < n; ++i) {
    const float* q = in.q.data() + i * d.dk;
    const float* k = in.k.data() + i * d.dk;
    const float* v = in.v.data() + i * d.dv;
    const float decay = std::exp(in.g[i]);
    for (std::size_t x = 0; x < d.dk * d.dv; ++x) S[x] *= decay;
    // u = beta (v - S^T k)
    std::fill(u.begin(), u.end(), 0.0f);
    for (std::size_t e = 0; e < d.dk; ++e) {
      const float* row = S + e * d.dv;
      for (std::size_t j = 0; j < d.dv; ++j) u[j] += row[j] * k[e];
    }
    for (std::size_t j = 0; j < d.dv; ++j) u[j] = (v[j] - u[j]) * in.beta[i];
    // S += k u^T;  o = S^T q
    float* oi = o + i * d.dv;
    std::fill(oi, oi + d.dv, 0.0f);
    for (std::size_t e = 0; e < d.dk; ++e) {
      float* row = S + e * d.dv;
      for (std::size_t j = 0; j < d.dv; ++j) {
        row[j] += k[e] * u[j];
        oi[j] += row[j] * q[e];
      }
    }
  }
}

float dot(const float* x, const float* y, std::size_t n) {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// Chunks of kChunkSize tokens, WY/UT form (see gated_delta_rule.py's chunk_gated_delta_rule):
//   c = cumsum(g);  A[i, j] = beta_i (k_i . k_j) exp(c_i - c_j), j < i
//   U = (I + A)^-1 (beta V);  W = (I + A)^-1 (beta exp(c) K)     (forward substitution)
//   V' = U - W S;  O = exp(c) (Q S) + [(Q K^T) exp(c_i - c_j)]_{j <= i} V'
//   S <- exp(c_last) S + (exp(c_last - c) K)^T V'
void chunked(const Dims& d, const HeadInputs& in, std::size_t n, float* S, float* o) {
  const std::size_t C = kChunkSize;
  std::vector<float> c(C), A(C * C), U(C * d.dv), W(C * d.dk), qk(C);
  for (std::size_t s = 0; s < n; s += C) {
    const std::size_t m = std::min(C, n - s);
    const float* q = in.q.data() + s * d.dk;
    const float* k = in.k.data() + s * d.dk;
    const float* v = in.v.data() + s * d.dv;
    const float* g = in.g.data() + s;
    const float* beta = in.beta.data() + s;
    float acc = 0.0f;
    for (std::size_t i = 0; i < m; ++i) c[i] = acc += g[i];
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < i; ++j) {
        A[i * C + j] = beta[i] * dot(k + i * d.dk, k + j * d.dk, d.dk) * std::exp(c[i] - c[j]);
      }
    }
    // Forward substitution: row i of U and W minus the earlier rows weighted by A.
    for (std::size_t i = 0; i < m; ++i) {
      float* Ui = U.data() + i * d.dv;
      float* Wi = W.data() + i * d.dk;
      for (std::size_t j = 0; j < d.dv; ++j) Ui[j] = beta[i] * v[i * d.dv + j];
      const float bw = beta[i] * std::exp(c[i]);
      for (std::size_t e = 0; e < d.dk; ++e) Wi[e] = bw * k[i * d.dk + e];
      for (std::size_t j = 0; j < i; ++j) {
        const float aij = A[i * C + j];
        const float* Uj = U.data() + j * d.dv;
        const float* Wj = W.data() + j * d.dk;
        for (std::size_t x = 0; x < d.dv; ++x) Ui[x] -= aij * Uj[x];
        for (std::size_t x = 0; x < d.dk; ++x) Wi[x] -= aij * Wj[x];
      }
    }
    // V' = U - W S, in place in U.
    for (std::size_t i = 0; i < m; ++i) {
      float* Ui = U.data() + i * d.dv;
      const float* Wi = W.data() + i * d.dk;
      for (std::size_t e = 0; e < d.dk; ++e) {
        const float* row = S + e * d.dv;
        for (std::size_t j = 0; j < d.dv; ++j) Ui[j] -= Wi[e] * row[j];
      }
    }
    // O = exp(c) (Q S) + masked (Q K^T) V'
    for (std::size_t i = 0; i < m; ++i) {
      float* oi = o + (s + i) * d.dv;
      std::fill(oi, oi + d.dv, 0.0f);
      const float* qi = q + i * d.dk;
      for (std::size_t e = 0; e < d.dk; ++e) {
        const float* row = S + e * d.dv;
        for (std::size_t j = 0; j < d.dv; ++j) oi[j] += qi[e] * row[j];
      }
      const float ec = std::exp(c[i]);
      for (std::size_t j = 0; j < d.dv; ++j) oi[j] *= ec;
      for (std::size_t j = 0; j <= i; ++j) qk[j] = dot(qi, k + j * d.dk, d.dk) * std::exp(c[i] - c[j]);
      for (std::size_t j = 0; j <= i; ++j) {
        const float* Vj = U.data() + j * d.dv;
        for (std::size_t x = 0; x < d.dv; ++x) oi[x] += qk[j] * Vj[x];
      }
    }
    // S <- exp(c_last) S + sum_i exp(c_last - c_i) k_i V'_i^T
    const float last = c[m - 1];
    const float el = std::exp(last);
    for (std::size_t x = 0; x < d.dk * d.dv; ++x) S[x] *= el;
    for (std::size_t i = 0; i < m; ++i) {
      const float w = std::exp(last - c[i]);
      const float* ki = k + i * d.dk;
      const float* Vi = U.data() + i * d.dv;
      for (std::size_t e = 0; e < d.dk; ++e) {
        const float ke = w * ki[e];
        float* row = S + e * d.dv;
        for (std::size_t j = 0; j < d.dv; ++j) row[j] += ke * Vi[j];
      }
    }
  }
}

template <typename T>
void gdn_impl(const GatedDeltaNetArgs<T>& a) {
  check_positive("num_k_heads", a.num_k_heads);
  check_positive("num_v_heads", a.num_v_heads);
  check_positive("head_k_dim", a.head_k_dim);
  check_positive("head_v_dim", a.head_v_dim);
  if (a.num_v_heads % a.num_k_heads != 0) {
    fail("num_v_heads", "must be a multiple of num_k_heads (value head j reads key head j / (Hv / Hk)), got Hv=" +
                            std::to_string(a.num_v_heads) + ", Hk=" + std::to_string(a.num_k_heads));
  }
  if (!std::isfinite(a.scale) || !(a.scale > 0.0f)) {
    std::ostringstream os;
    os << "must be finite and > 0, got " << a.scale;
    fail("scale", os.str());
  }
  Dims d{};
  d.Hk = static_cast<std::size_t>(a.num_k_heads);
  d.Hv = static_cast<std::size_t>(a.num_v_heads);
  d.dk = static_cast<std::size_t>(a.head_k_dim);
  d.dv = static_cast<std::size_t>(a.head_v_dim);
  d.group = d.Hv / d.Hk;
  d.tokens = count_of("v", a.v.size(), d.Hv * d.dv, "[tokens, num_v_heads, head_v_dim]");
  check_size("q", a.q.size(), d.tokens * d.Hk * d.dk, "[tokens, num_k_heads, head_k_dim]");
  check_size("k", a.k.size(), d.tokens * d.Hk * d.dk, "[tokens, num_k_heads, head_k_dim]");
  check_size("o", a.o.size(), d.tokens * d.Hv * d.dv, "[tokens, num_v_heads, head_v_dim]");
  const bool fused = a.a.size() || a.b.size() || a.A_log.size() || a.dt_bias.size();
  const bool given = a.g.size() || a.beta.size();
  if (fused == given) fail("a", "give either the fused gates (a, b, A_log, dt_bias) or precomputed (g, beta), not both or neither");
  if (fused) {
    check_size("a", a.a.size(), d.tokens * d.Hv, "[tokens, num_v_heads]");
    check_size("b", a.b.size(), d.tokens * d.Hv, "[tokens, num_v_heads]");
    check_size("A_log", a.A_log.size(), d.Hv, "[num_v_heads]");
    check_size("dt_bias", a.dt_bias.size(), d.Hv, "[num_v_heads]");
  } else {
    check_size("g", a.g.size(), d.tokens * d.Hv, "[tokens, num_v_heads]");
    check_size("beta", a.beta.size(), d.tokens * d.Hv, "[tokens, num_v_heads]");
  }
  d.num_slots = count_of("state_pool", a.state_pool.size(), d.Hv * d.dk * d.dv,
                         "[num_slots, num_v_heads, head_k_dim, head_v_dim]");
  const std::vector<int64_t> cu = check_sequences(a.seqs, d.tokens, d.num_slots);
  const bool decode = a.seqs.cu_seqlens.size() == 0;
  const bool use_chunks =
      a.algorithm == Algorithm::kChunked || (a.algorithm == Algorithm::kAuto && !decode);

  // One task per (sequence, value head): each owns its state slice and output columns, so the
  // split over the cpu:: thread pool never changes a result.
  const std::size_t seqs = cu.size() - 1;
  const auto work = [&](std::size_t task) {
    thread_local HeadInputs in;
    thread_local std::vector<float> o;
    const std::size_t b = task / d.Hv, h = task % d.Hv;
    const std::size_t n = static_cast<std::size_t>(cu[b + 1] - cu[b]);
    o.resize(n * d.dv);
    float* S = a.state_pool.data() + (static_cast<std::size_t>(a.seqs.slots[b]) * d.Hv + h) * d.dk * d.dv;
    if (!reads_state(a.seqs, b)) std::fill(S, S + d.dk * d.dv, 0.0f);
    gather_head(a, d, cu[b], cu[b + 1], h, in);
    if (use_chunks) {
      chunked(d, in, n, S, o.data());
    } else {
      recurrent(d, in, n, S, o.data());
    }
    for (std::size_t i = 0; i < n; ++i) {
      T* dst = a.o.data() + ((static_cast<std::size_t>(cu[b]) + i) * d.Hv + h) * d.dv;
      for (std::size_t j = 0; j < d.dv; ++j) dst[j] = store<T>(o[i * d.dv + j]);
    }
  };
  const std::size_t tasks = seqs * d.Hv;
  if (cpu::num_threads() > 1 && d.tokens * d.Hv * d.dk * d.dv >= (std::size_t{1} << 20)) {
    cpu::parallel_for(tasks, work);
  } else {
    for (std::size_t task = 0; task < tasks; ++task) work(task);
  }
}

}  // namespace

void causal_conv1d(const CausalConv1dArgs<float>& args) { conv_impl(args); }
void causal_conv1d(const CausalConv1dArgs<uint16_t>& args) { conv_impl(args); }
void gated_delta_net(const GatedDeltaNetArgs<float>& args) { gdn_impl(args); }
void gated_delta_net(const GatedDeltaNetArgs<uint16_t>& args) { gdn_impl(args); }

}  // namespace qwen35_trt::gdn
