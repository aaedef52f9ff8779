// CPU reference of the GatedAttention op; the contract is in attention.h and docs/ops.md.
// Plain loops, one token and head at a time, in the order the CUDA kernels use (the scalar math
// is shared through qwen35_trt/common/attention_math.h): first every new token's keys and values
// go into the pool, then every new token attends to positions 0..pos of its sequence.
#include "qwen35_trt/attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// Norm then RoPE of one head (hd bf16 values at `x`), as bf16-valued floats.
void normalize_rotate(const uint16_t* x, const float* weight, int64_t pos, const Dims& d, float theta, float eps,
                      float* out) {
  std::vector<float> xf(static_cast<std::size_t>(d.hd)), normed(static_cast<std::size_t>(d.hd));
  for (int64_t j = 0; j < d.hd; ++j) xf[j] = bf(x[j]);
  const float inv = head_rms_inverse(xf.data(), static_cast<int>(d.hd), eps);
  for (int64_t j = 0; j < d.hd; ++j) normed[j] = head_rms_apply(xf[j], inv, weight[j]);
  const int64_t half = d.rot / 2;
  for (int64_t j = 0; j < d.hd; ++j) {
    if (j >= d.rot) {
      out[j] = normed[j];
      continue;
    }
    const bool first = j < half;
    const int64_t i = first ? j : j - half;
    float c = 0.0f, s = 0.0f;
    rope_cos_sin(pos, static_cast<int>(i), static_cast<int>(d.rot), theta, &c, &s);
    out[j] = rope_apply(normed[j], normed[first ? j + half : j - half], first, c, s);
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
  for (int64_t i = 0; i < d.B; ++i) {
    for (int64_t t = a.cu_seqlens[i]; t < a.cu_seqlens[i + 1]; ++t) {
      const int64_t pos = a.context_lens[i] + (t - a.cu_seqlens[i]);
      for (int64_t h = 0; h < d.nh; ++h) {
        normalize_rotate(a.qg.data() + (t * d.nh * 2 + 2 * h) * d.hd, qw.data(), pos, d, a.rope_theta, a.eps,
                         q.data() + (t * d.nh + h) * d.hd);
      }
      for (int64_t g = 0; g < d.nkv; ++g) {
        normalize_rotate(a.k.data() + (t * d.nkv + g) * d.hd, kw.data(), pos, d, a.rope_theta, a.eps, tmp.data());
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

  // 2. Attention of every new token over positions 0..pos of its sequence.
  const int64_t group = d.nh / d.nkv;
  std::vector<float> key(hd), o(hd), scores;
  for (int64_t i = 0; i < d.B; ++i) {
    for (int64_t t = a.cu_seqlens[i]; t < a.cu_seqlens[i + 1]; ++t) {
      const int64_t pos = a.context_lens[i] + (t - a.cu_seqlens[i]);
      scores.assign(static_cast<std::size_t>(pos + 1), 0.0f);
      for (int64_t h = 0; h < d.nh; ++h) {
        const int64_t g = h / group;
        const float* qh = q.data() + (t * d.nh + h) * d.hd;
        SoftmaxState st = softmax_start();
        for (int64_t p = 0; p <= pos; ++p) {
          const uint16_t* kp = pool_at(block_of(i, p), 0, g, p % d.bs);
          for (std::size_t j = 0; j < hd; ++j) key[j] = bf(kp[j]);
          scores[p] = score_from_dot(head_dot(qh, key.data(), static_cast<int>(d.hd)), a.scale);
          softmax_add(st, scores[p]);
        }
        std::fill(o.begin(), o.end(), 0.0f);
        for (int64_t p = 0; p <= pos; ++p) {
          const float prob = softmax_prob(st, scores[p]);
          const uint16_t* vp = pool_at(block_of(i, p), 1, g, p % d.bs);
          for (std::size_t j = 0; j < hd; ++j) o[j] = math::add_rn(o[j], math::mul_rn(prob, bf(vp[j])));
        }
        const uint16_t* gate = a.qg.data() + (t * d.nh * 2 + 2 * h + 1) * d.hd;
        uint16_t* dst = a.out.data() + (t * d.nh + h) * d.hd;
        for (std::size_t j = 0; j < hd; ++j) dst[j] = to_bf(gated_output(o[j], bf(gate[j])));
      }
    }
  }
}

}  // namespace qwen35_trt::attention
