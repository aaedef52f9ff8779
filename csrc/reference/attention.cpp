// CPU reference of the GatedAttention op; the contract is in attention.h and docs/ops.md.
// Plain loops, one token and head at a time, in the order the CUDA kernels use (the scalar math
// is shared through qwen35_trt/common/attention_math.h): first every new token's keys and values
// go into the pool, then every new token attends to positions 0..pos of its sequence.
#include "qwen35_trt/attention.h"
#include "qwen35_trt/cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace qwen35_trt::attention {
namespace {

[[noreturn]] void fail(const char* arg, const std::string& what) {
  throw std::invalid_argument(std::string(arg) + ": " + what);
}

float bf(uint16_t bits) { return nvfp4::bf16_to_float(bits); }
uint16_t to_bf(float x) { return nvfp4::float_to_bf16(x); }

void check_size(const char* arg, std::size_t got, std::size_t expected, const std::string& shape) {
  if (got != expected) {
    std::ostringstream os;
    os << "expected " << expected << " elements (" << shape << "), got " << got;
    fail(arg, os.str());
  }
}

struct Dims {
  int64_t T, B, nh, nkv, hd, rot, bs, num_blocks, max_blocks;
};

Dims check_args(const GatedAttentionArgs& a) {
  Dims d{};
  d.nh = a.num_heads;
  d.nkv = a.num_kv_heads;
  d.hd = a.head_dim;
  d.rot = a.rotary_dim;
  d.bs = a.block_size;
  if (d.nh < 1) fail("num_heads", "must be >= 1, got " + std::to_string(d.nh));
  if (d.nkv < 1 || d.nh % d.nkv != 0) {
    fail("num_kv_heads", "must be >= 1 and divide num_heads = " + std::to_string(d.nh) + ", got " + std::to_string(d.nkv));
  }
  if (d.hd < kLanes || d.hd % kLanes != 0 || d.hd > kMaxHeadDim) {
    fail("head_dim", "must be a multiple of 32 in [32, 256], got " + std::to_string(d.hd));
  }
  if (d.rot < 0 || d.rot % 2 != 0 || d.rot > d.hd) {
    fail("rotary_dim", "must be even and in [0, head_dim = " + std::to_string(d.hd) + "], got " + std::to_string(d.rot));
  }
  if (d.bs < 1) fail("block_size", "must be >= 1, got " + std::to_string(d.bs));
  if (!(a.rope_theta > 0.0f) || !std::isfinite(a.rope_theta)) {
    fail("rope_theta", "must be finite and > 0, got " + std::to_string(a.rope_theta));
  }
  if (!(a.eps >= 0.0f) || !std::isfinite(a.eps)) fail("eps", "must be finite and >= 0, got " + std::to_string(a.eps));
  if (!(a.scale > 0.0f) || !std::isfinite(a.scale)) {
    fail("scale", "must be finite and > 0, got " + std::to_string(a.scale));
  }

  const std::size_t qg_row = static_cast<std::size_t>(d.nh * 2 * d.hd);
  const std::size_t kv_row = static_cast<std::size_t>(d.nkv * d.hd);
  if (a.qg.size() % qg_row != 0) {
    fail("qg", "expected a multiple of nh * 2 * hd = " + std::to_string(qg_row) + " elements ([T, nh * 2 * hd]), got " +
                   std::to_string(a.qg.size()));
  }
  d.T = static_cast<int64_t>(a.qg.size() / qg_row);
  const std::size_t T = static_cast<std::size_t>(d.T);
  check_size("k", a.k.size(), T * kv_row, "[T, nkv * hd]");
  check_size("v", a.v.size(), T * kv_row, "[T, nkv * hd]");
  check_size("q_norm_weight", a.q_norm_weight.size(), static_cast<std::size_t>(d.hd), "[hd]");
  check_size("k_norm_weight", a.k_norm_weight.size(), static_cast<std::size_t>(d.hd), "[hd]");
  check_size("out", a.out.size(), T * static_cast<std::size_t>(d.nh * d.hd), "[T, nh * hd]");
  const std::size_t block_elems = static_cast<std::size_t>(2 * d.nkv * d.bs * d.hd);
  if (a.kv_pool.size() == 0 || a.kv_pool.size() % block_elems != 0) {
    fail("kv_pool", "expected a positive multiple of 2 * nkv * block_size * hd = " + std::to_string(block_elems) +
                        " elements ([num_blocks, 2, nkv, block_size, hd]), got " + std::to_string(a.kv_pool.size()));
  }
  d.num_blocks = static_cast<int64_t>(a.kv_pool.size() / block_elems);

  d.B = static_cast<int64_t>(a.context_lens.size());
  if (d.B < 1) fail("context_lens", "at least one sequence is required");
  check_size("cu_seqlens", a.cu_seqlens.size(), static_cast<std::size_t>(d.B + 1), "[B + 1], B = len(context_lens)");
  if (a.block_tables.size() == 0 || a.block_tables.size() % static_cast<std::size_t>(d.B) != 0) {
    fail("block_tables", "expected a positive multiple of B = " + std::to_string(d.B) +
                             " elements ([B, max_blocks_per_seq]), got " + std::to_string(a.block_tables.size()));
  }
  d.max_blocks = static_cast<int64_t>(a.block_tables.size()) / d.B;

  if (a.cu_seqlens[0] != 0) fail("cu_seqlens", "must start at 0, got " + std::to_string(a.cu_seqlens[0]));
  for (int64_t i = 0; i < d.B; ++i) {
    const int64_t n = int64_t{a.cu_seqlens[i + 1]} - a.cu_seqlens[i];
    if (n < 1) {
      fail("cu_seqlens", "sequence " + std::to_string(i) + " has length " + std::to_string(n) +
                             " (every sequence needs at least one token)");
    }
    const int64_t ctx = a.context_lens[i];
    if (ctx < 0) fail("context_lens", "sequence " + std::to_string(i) + " has " + std::to_string(ctx) + " (must be >= 0)");
    const int64_t needed = (ctx + n + d.bs - 1) / d.bs;
    if (needed > d.max_blocks) {
      fail("block_tables", "sequence " + std::to_string(i) + " reaches " + std::to_string(ctx + n) + " tokens = " +
                               std::to_string(needed) + " blocks of " + std::to_string(d.bs) + ", but a row holds " +
                               std::to_string(d.max_blocks));
    }
    for (int64_t j = 0; j < needed; ++j) {
      const int32_t block = a.block_tables[static_cast<std::size_t>(i * d.max_blocks + j)];
      if (block < 0 || block >= d.num_blocks) {
        fail("block_tables", "sequence " + std::to_string(i) + ", logical block " + std::to_string(j) + ": block id " +
                                 std::to_string(block) + " is outside [0, num_blocks = " + std::to_string(d.num_blocks) + ")");
      }
    }
  }
  if (static_cast<int64_t>(a.cu_seqlens[d.B]) != d.T) {
    fail("cu_seqlens", "last entry " + std::to_string(a.cu_seqlens[d.B]) + " must equal the number of tokens " +
                           std::to_string(d.T));
  }
  return d;
}

// cos and sin of every rotary frequency at one position (rope_cos_sin), computed once per token
// rather than once per head and element.
void rope_table(int64_t pos, const Dims& d, float theta, float* c, float* s) {
  for (int64_t i = 0; i < d.rot / 2; ++i) rope_cos_sin(pos, static_cast<int>(i), static_cast<int>(d.rot), theta, &c[i], &s[i]);
}

// Norm then RoPE of one head (hd bf16 values at `x`), as bf16-valued floats; c, s from rope_table.
void normalize_rotate(const uint16_t* x, const float* weight, const float* c, const float* s, const Dims& d, float eps,
                      float* out) {
  float xf[kMaxHeadDim], normed[kMaxHeadDim];
  for (int64_t j = 0; j < d.hd; ++j) xf[j] = bf(x[j]);
  const float inv = head_rms_inverse(xf, static_cast<int>(d.hd), eps);
  for (int64_t j = 0; j < d.hd; ++j) normed[j] = head_rms_apply(xf[j], inv, weight[j]);
  const int64_t half = d.rot / 2;
  for (int64_t j = 0; j < d.hd; ++j) {
    if (j >= d.rot) {
      out[j] = normed[j];
      continue;
    }
    const bool first = j < half;
    const int64_t i = first ? j : j - half;
    out[j] = rope_apply(normed[j], normed[first ? j + half : j - half], first, c[i], s[i]);
  }
}

// Keys are scored kKeyChunk at a time, one key per SIMD lane: each lane runs head_dot's scalar
// order for its key (lane sums over ascending dims, then the butterfly), so the loops below
// vectorise without changing a bit. Keys are converted from the pool once per sequence and kv
// head, not once per query head and token.
constexpr int64_t kKeyChunk = 16;

// One query head's attention over keys 0..pos of its sequence: q [hd] (normalised, rotated),
// kt the keys as [chunk][hd][kKeyChunk] fp32, vf the values [key][hd] fp32, gate [hd] bf16 ->
// dst [hd] bf16. scores (>= pos + kKeyChunk floats) is scratch. Compiled once per
// ISA (attend_query below); only IEEE +, * and the same libm calls, so every copy gives the same
// bits.
struct Query {
  const float* q;
  const float* kt;
  const float* vf;
  const uint16_t* gate;
  uint16_t* dst;
  int64_t pos, hd;
  float scale;
};

// W floats as one value with lane-wise IEEE +, * (GCC/Clang vector extension): W is the register
// width of the ISA the copy is compiled for, so each is one register; kKeyChunk / W of them hold
// a chunk's keys. Loads go through memcpy (rows are not register-aligned).
template <int W>
struct Lanes {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
};

template <int W>
__attribute__((always_inline)) inline void attend_query_body(const Query& a, float* scores) {
  using V = typename Lanes<W>::type;
  constexpr int kPieces = static_cast<int>(kKeyChunk) / W;
  const int64_t hd = a.hd, per_lane = hd / kLanes;
  for (int64_t c = 0; c * kKeyChunk <= a.pos; ++c) {
    const float* kc = a.kt + c * kKeyChunk * hd;
    V part[kLanes][kPieces];
    for (int64_t l = 0; l < kLanes; ++l) {
      V acc[kPieces] = {};
      for (int64_t e = 0; e < per_lane; ++e) {
        const float qv = a.q[l * per_lane + e];
        for (int i = 0; i < kPieces; ++i) {
          V k;
          std::memcpy(&k, kc + (l * per_lane + e) * kKeyChunk + i * W, sizeof k);
          const V prod = qv * k;
          acc[i] = acc[i] + prod;
        }
      }
      for (int i = 0; i < kPieces; ++i) part[l][i] = acc[i];
    }
    // head_dot's butterfly as far as lane 0 needs it: lane l < mask adds lane l + mask.
    for (int64_t mask = kLanes / 2; mask >= 1; mask /= 2) {
      for (int64_t l = 0; l < mask; ++l) {
        for (int i = 0; i < kPieces; ++i) part[l][i] = part[l][i] + part[l + mask][i];
      }
    }
    std::memcpy(scores + c * kKeyChunk, &part[0][0], kKeyChunk * sizeof(float));
  }
  SoftmaxState st = softmax_start();
  for (int64_t p = 0; p <= a.pos; ++p) {
    scores[p] = score_from_dot(scores[p], a.scale);
    softmax_add(st, scores[p]);
  }
  // o [hd] as hd / W vectors (hd is a multiple of 32), summed over ascending keys.
  const int64_t nv = hd / W;
  V acc[kMaxHeadDim / W] = {};
  for (int64_t p = 0; p <= a.pos; ++p) {
    const float prob = softmax_prob(st, scores[p]);
    const float* vrow = a.vf + p * hd;
    for (int64_t j = 0; j < nv; ++j) {
      V v;
      std::memcpy(&v, vrow + j * W, sizeof v);
      const V prod = prob * v;
      acc[j] = acc[j] + prod;
    }
  }
  float o[kMaxHeadDim];
  std::memcpy(o, acc, static_cast<std::size_t>(hd) * sizeof(float));
  for (int64_t j = 0; j < hd; ++j) a.dst[j] = to_bf(gated_output(o[j], bf(a.gate[j])));
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2,avx512f"))) void attend_query_avx512(const Query& a, float* scores) {
  attend_query_body<16>(a, scores);
}
__attribute__((target("avx2"))) void attend_query_avx2(const Query& a, float* scores) {
  attend_query_body<8>(a, scores);
}
#else
void attend_query_avx512(const Query& a, float* scores) { attend_query_body<4>(a, scores); }
void attend_query_avx2(const Query& a, float* scores) { attend_query_body<4>(a, scores); }
#endif
void attend_query_portable(const Query& a, float* scores) { attend_query_body<4>(a, scores); }

void attend_query(const Query& a, float* scores) {
  switch (cpu::isa()) {
    case cpu::Isa::kAvx512: attend_query_avx512(a, scores); break;
    case cpu::Isa::kAvx2: attend_query_avx2(a, scores); break;
    default: attend_query_portable(a, scores); break;
  }
}

}  // namespace

void gated_attention(const GatedAttentionArgs& a) {
  const Dims d = check_args(a);
  const std::size_t hd = static_cast<std::size_t>(d.hd);
  std::vector<float> qw(hd), kw(hd);
  for (std::size_t j = 0; j < hd; ++j) {
    qw[j] = bf(a.q_norm_weight[j]);
    kw[j] = bf(a.k_norm_weight[j]);
  }
  // Pool element (block, kv = 0 K / 1 V, head g, row r, dim 0).
  auto pool_at = [&](int64_t block, int kv, int64_t g, int64_t r) {
    return a.kv_pool.data() + (((block * 2 + kv) * d.nkv + g) * d.bs + r) * d.hd;
  };
  auto block_of = [&](int64_t seq, int64_t pos) { return int64_t{a.block_tables[seq * d.max_blocks + pos / d.bs]}; };

  // 1. Keys and values of the new tokens into the pool; normalised, rotated queries aside.
  std::vector<float> q(static_cast<std::size_t>(d.T * d.nh) * hd), tmp(hd);
  std::vector<float> cos_t(static_cast<std::size_t>(d.rot / 2 + 1)), sin_t(cos_t.size());
  for (int64_t i = 0; i < d.B; ++i) {
    for (int64_t t = a.cu_seqlens[i]; t < a.cu_seqlens[i + 1]; ++t) {
      const int64_t pos = a.context_lens[i] + (t - a.cu_seqlens[i]);
      rope_table(pos, d, a.rope_theta, cos_t.data(), sin_t.data());
      for (int64_t h = 0; h < d.nh; ++h) {
        normalize_rotate(a.qg.data() + (t * d.nh * 2 + 2 * h) * d.hd, qw.data(), cos_t.data(), sin_t.data(), d, a.eps,
                         q.data() + (t * d.nh + h) * d.hd);
      }
      for (int64_t g = 0; g < d.nkv; ++g) {
        normalize_rotate(a.k.data() + (t * d.nkv + g) * d.hd, kw.data(), cos_t.data(), sin_t.data(), d, a.eps, tmp.data());
        uint16_t* kp = pool_at(block_of(i, pos), 0, g, pos % d.bs);
        uint16_t* vp = pool_at(block_of(i, pos), 1, g, pos % d.bs);
        const uint16_t* vsrc = a.v.data() + (t * d.nkv + g) * d.hd;
        for (std::size_t j = 0; j < hd; ++j) {
          kp[j] = to_bf(tmp[j]);
          vp[j] = vsrc[j];
        }
      }
    }
  }

  // 2. Attention of every new token over positions 0..pos of its sequence, one sequence and kv
  // head at a time: its keys (transposed per chunk, zero-padded) and values as fp32 first, then
  // the (token, query head) pairs of the group over the cpu:: thread pool (each writes only its
  // own output row, so the split never changes a result).
  const int64_t group = d.nh / d.nkv;
  std::vector<float> kt, vf;
  for (int64_t i = 0; i < d.B; ++i) {
    const int64_t keys = a.context_lens[i] + (a.cu_seqlens[i + 1] - a.cu_seqlens[i]);
    const int64_t chunks = (keys + kKeyChunk - 1) / kKeyChunk;
    kt.assign(static_cast<std::size_t>(chunks * kKeyChunk) * hd, 0.0f);
    vf.resize(static_cast<std::size_t>(keys) * hd);
    for (int64_t g = 0; g < d.nkv; ++g) {
      for (int64_t p = 0; p < keys; ++p) {
        const uint16_t* kp = pool_at(block_of(i, p), 0, g, p % d.bs);
        const uint16_t* vp = pool_at(block_of(i, p), 1, g, p % d.bs);
        float* kc = kt.data() + (p / kKeyChunk) * kKeyChunk * d.hd + p % kKeyChunk;
        for (int64_t j = 0; j < d.hd; ++j) kc[j * kKeyChunk] = bf(kp[j]);
        for (int64_t j = 0; j < d.hd; ++j) vf[p * d.hd + j] = bf(vp[j]);
      }
      const int64_t t0 = a.cu_seqlens[i], n = a.cu_seqlens[i + 1] - t0;
      const auto work = [&](std::size_t task) {
        thread_local std::vector<float> scores;
        scores.resize(static_cast<std::size_t>(chunks * kKeyChunk));
        const int64_t t = t0 + static_cast<int64_t>(task) / group, h = g * group + static_cast<int64_t>(task) % group;
        const Query q_args{q.data() + (t * d.nh + h) * d.hd, kt.data(), vf.data(),
                           a.qg.data() + (t * d.nh * 2 + 2 * h + 1) * d.hd, a.out.data() + (t * d.nh + h) * d.hd,
                           a.context_lens[i] + (t - t0), d.hd, a.scale};
        attend_query(q_args, scores.data());
      };
      const std::size_t tasks = static_cast<std::size_t>(n * group);
      if (cpu::num_threads() > 1 && keys * n >= 256) {
        cpu::parallel_for(tasks, work);
      } else {
        for (std::size_t task = 0; task < tasks; ++task) work(task);
      }
    }
  }
}

}  // namespace qwen35_trt::attention
