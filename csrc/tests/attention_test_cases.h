// Random GatedAttention test cases and their C++-reference results, shared by the CUDA test
// (test_attention_cuda, real kernels on a GPU) and the emulated one (test_attention_emulated, the
// kernel source on the CPU), so both check the kernels on the same kind of inputs: sequences
// that start a prompt (context 0), continue a cached context by a chunk, or decode one token;
// block tables holding shuffled block ids (and garbage past the blocks a sequence uses); a pool
// whose cached positions hold random keys and values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "gdn_test_cases.h"  // Random, cu_of, rel_error
#include "qwen35_trt/attention.h"
#include "qwen35_trt/kernels/attention.h"

namespace qwen35_trt::testing {

struct AttnShape {
  int nh, nkv, hd, rot, bs;
  float theta = 10000.0f;
};

// One GatedAttention call on dense inputs (the kernels may get qg, k and v as column slices of
// one buffer instead: fuse_rows).
struct AttnCase {
  AttnShape s;
  float eps = 1e-6f, scale = 0.0f;
  std::vector<int> lens;
  std::vector<int32_t> cu, ctx;
  int64_t num_blocks = 0, max_blocks = 0;
  std::vector<int32_t> tables;                      // [B, max_blocks]
  std::vector<uint16_t> qg, k, v, q_w, k_w, pool;  // pool: the cache before the call
  int T() const { return cu.back(); }
  int B() const { return static_cast<int>(lens.size()); }
  int64_t qg_width() const { return static_cast<int64_t>(s.nh) * 2 * s.hd; }
  int64_t kv_width() const { return static_cast<int64_t>(s.nkv) * s.hd; }
  int64_t out_width() const { return static_cast<int64_t>(s.nh) * s.hd; }
  std::size_t block_elems() const { return static_cast<std::size_t>(2) * s.nkv * s.bs * s.hd; }
};

// Table entries past the blocks a sequence uses hold this id (out of range: the op ignores them).
constexpr int32_t kUnusedBlock = 1 << 30;

// Blocks sequence i touches: its cached and new positions, ceil((ctx + len) / bs).
inline int64_t blocks_used(const AttnCase& c, int i) { return (c.ctx[i] + c.lens[i] + c.s.bs - 1) / c.s.bs; }

inline AttnCase make_attn_case(Random& r, const AttnShape& s, const std::vector<int>& lens, const std::vector<int>& ctx) {
  AttnCase c;
  c.s = s;
  c.scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  c.lens = lens;
  c.cu = cu_of(lens);
  c.ctx.assign(ctx.begin(), ctx.end());
  int64_t total = 0;
  for (int i = 0; i < c.B(); ++i) {
    c.max_blocks = std::max(c.max_blocks, blocks_used(c, i) + 1);  // one spare entry per row
    total += blocks_used(c, i);
  }
  c.num_blocks = total + 2;  // two blocks nobody uses: they must stay untouched
  std::vector<int32_t> ids(static_cast<std::size_t>(c.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), r.rng);
  c.tables.assign(static_cast<std::size_t>(c.B() * c.max_blocks), kUnusedBlock);
  std::size_t next = 0;
  for (int i = 0; i < c.B(); ++i)
    for (int64_t j = 0; j < blocks_used(c, i); ++j) c.tables[i * c.max_blocks + j] = ids[next++];
  const std::size_t T = static_cast<std::size_t>(c.T());
  c.qg = r.randn_bf16(T * c.qg_width());
  c.k = r.randn_bf16(T * c.kv_width());
  c.v = r.randn_bf16(T * c.kv_width());
  c.q_w = r.randn_bf16(s.hd, 0.2f);
  c.k_w = r.randn_bf16(s.hd, 0.2f);
  c.pool = r.randn_bf16(static_cast<std::size_t>(c.num_blocks) * c.block_elems());
  return c;
}

// The sequences `seqs` of `c` as a call of their own (same pool, weights and block ids).
inline AttnCase subset(const AttnCase& c, const std::vector<int>& seqs) {
  AttnCase d = c;
  d.lens.clear();
  d.ctx.clear();
  d.tables.clear();
  d.qg.clear();
  d.k.clear();
  d.v.clear();
  for (int i : seqs) {
    d.lens.push_back(c.lens[i]);
    d.ctx.push_back(c.ctx[i]);
    d.tables.insert(d.tables.end(), c.tables.begin() + i * c.max_blocks, c.tables.begin() + (i + 1) * c.max_blocks);
    auto rows = [&](const std::vector<uint16_t>& x, int64_t w, std::vector<uint16_t>& out) {
      out.insert(out.end(), x.begin() + c.cu[i] * w, x.begin() + c.cu[i + 1] * w);
    };
    rows(c.qg, c.qg_width(), d.qg);
    rows(c.k, c.kv_width(), d.k);
    rows(c.v, c.kv_width(), d.v);
  }
  d.cu = cu_of(d.lens);
  return d;
}

// The C++ reference on a case: out [T, nh * hd] and the pool after the call.
inline void attention_reference(const AttnCase& c, std::vector<uint16_t>& out, std::vector<uint16_t>& pool) {
  pool = c.pool;
  out.assign(static_cast<std::size_t>(c.T()) * c.out_width(), 0);
  attention::GatedAttentionArgs a;
  a.qg = c.qg;
  a.k = c.k;
  a.v = c.v;
  a.q_norm_weight = c.q_w;
  a.k_norm_weight = c.k_w;
  a.kv_pool = pool;
  a.block_tables = c.tables;
  a.cu_seqlens = c.cu;
  a.context_lens = c.ctx;
  a.out = out;
  a.num_heads = c.s.nh;
  a.num_kv_heads = c.s.nkv;
  a.head_dim = c.s.hd;
  a.rotary_dim = c.s.rot;
  a.block_size = c.s.bs;
  a.rope_theta = c.s.theta;
  a.eps = c.eps;
  a.scale = c.scale;
  attention::gated_attention(a);
}

// qg, k and v as column slices of one [T, qg | k | v | pad] buffer (the fused projection the model
// may pass); the columns of each in the row.
struct FusedRows {
  std::vector<uint16_t> data;
  int64_t stride = 0, qg_col = 0, k_col = 0, v_col = 0;
};

inline FusedRows fuse_rows(const AttnCase& c, int pad) {
  FusedRows f;
  f.qg_col = 0;
  f.k_col = c.qg_width();
  f.v_col = f.k_col + c.kv_width();
  f.stride = f.v_col + c.kv_width() + pad;
  f.data.assign(static_cast<std::size_t>(c.T()) * f.stride, 0xFFFF);
  for (int t = 0; t < c.T(); ++t) {
    auto* row = f.data.data() + t * f.stride;
    std::copy_n(c.qg.begin() + t * c.qg_width(), c.qg_width(), row + f.qg_col);
    std::copy_n(c.k.begin() + t * c.kv_width(), c.kv_width(), row + f.k_col);
    std::copy_n(c.v.begin() + t * c.kv_width(), c.kv_width(), row + f.v_col);
  }
  return f;
}

// The kernels' parameters of a case with dense rows; the caller sets the pointers (and the
// strides when it passes other rows).
inline kernels::GatedAttentionParams shape_params(const AttnCase& c) {
  kernels::GatedAttentionParams p;
  p.qg_stride = c.qg_width();
  p.k_stride = c.kv_width();
  p.v_stride = c.kv_width();
  p.out_stride = c.out_width();
  p.num_blocks = c.num_blocks;
  p.block_size = c.s.bs;
  p.max_blocks_per_seq = c.max_blocks;
  p.batch = c.B();
  p.tokens = c.T();
  p.num_heads = c.s.nh;
  p.num_kv_heads = c.s.nkv;
  p.head_dim = c.s.hd;
  p.rotary_dim = c.s.rot;
  p.rope_theta = c.s.theta;
  p.eps = c.eps;
  p.scale = c.scale;
  return p;
}

}  // namespace qwen35_trt::testing
