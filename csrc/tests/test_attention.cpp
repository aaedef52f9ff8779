// ctest for the GatedAttention CPU reference (qwen35_trt/attention.h): against a direct
// double-precision implementation written here from the math (contiguous history, no paging,
// no bf16 rounding past the inputs); invariances that must hold bit for bit (one call vs prefill
// chunks and decode steps, any block size and block order, a sequence alone vs in a batch);
// argument validation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "qwen35_trt/attention.h"
#include "qwen35_trt/cpu.h"

namespace att = qwen35_trt::attention;
using qwen35_trt::nvfp4::bf16_to_float;
using qwen35_trt::nvfp4::float_to_bf16;

namespace cpu = qwen35_trt::cpu;

namespace {

std::mt19937 rng(2024);

std::vector<uint16_t> randn_bf16(std::size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = float_to_bf16(dist(rng));
  return v;
}

struct Shape {
  int nh, nkv, hd, rot;
  float theta = 10000.0f, eps = 1e-6f;
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(hd)); }
};

// The full token streams of some sequences: every row of qg, k, v for positions 0..L-1.
struct Streams {
  Shape s;
  std::vector<int> lens;
  std::vector<std::vector<uint16_t>> qg, k, v;  // per sequence [L, ...]
  std::vector<uint16_t> q_norm, k_norm;
};

Streams make_streams(const Shape& s, const std::vector<int>& lens) {
  Streams st{s, lens, {}, {}, {}, randn_bf16(s.hd, 0.3f), randn_bf16(s.hd, 0.3f)};
  for (int L : lens) {
    st.qg.push_back(randn_bf16(static_cast<std::size_t>(L) * s.nh * 2 * s.hd, 1.0f));
    st.k.push_back(randn_bf16(static_cast<std::size_t>(L) * s.nkv * s.hd, 1.0f));
    st.v.push_back(randn_bf16(static_cast<std::size_t>(L) * s.nkv * s.hd, 1.0f));
  }
  return st;
}

// A paged cache: pool + per-sequence block lists, with block ids handed out in a shuffled order.
struct Cache {
  int bs, num_blocks, max_blocks, nkv, hd;
  std::vector<uint16_t> pool;
  std::vector<std::vector<int32_t>> tables;
  Cache(const Shape& s, int block_size, const std::vector<int>& lens, unsigned shuffle_seed)
      : bs(block_size), nkv(s.nkv), hd(s.hd) {
    max_blocks = 0;
    int total = 0;
    for (int L : lens) {
      max_blocks = std::max(max_blocks, (L + bs - 1) / bs);
      total += (L + bs - 1) / bs;
    }
    num_blocks = total + 3;  // a few spare blocks that nobody owns
    std::vector<int32_t> ids(num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937(shuffle_seed));
    std::size_t next = 0;
    for (int L : lens) {
      std::vector<int32_t> row(max_blocks, -1);  // unused entries stay invalid: never read
      for (int j = 0; j < (L + bs - 1) / bs; ++j) row[j] = ids[next++];
      tables.push_back(row);
    }
    pool.assign(static_cast<std::size_t>(num_blocks) * 2 * nkv * bs * hd, float_to_bf16(7.0f));
  }
  // K (kv = 0) or V (kv = 1) of sequence `seq` at position `pos`, head g.
  const uint16_t* at(int seq, int pos, int kv, int g) const {
    const int64_t block = tables[seq][pos / bs];
    return pool.data() + (((block * 2 + kv) * nkv + g) * bs + pos % bs) * hd;
  }
};

// The call's arguments over the given buffers, with the shape's attributes.
att::GatedAttentionArgs make_args(const Shape& s, const std::vector<uint16_t>& qg, const std::vector<uint16_t>& k,
                                  const std::vector<uint16_t>& v, const Streams& st, Cache& cache,
                                  const std::vector<int32_t>& tables, const std::vector<int32_t>& cu,
                                  const std::vector<int32_t>& ctx, std::vector<uint16_t>& out) {
  att::GatedAttentionArgs a;
  a.qg = qg;
  a.k = k;
  a.v = v;
  a.q_norm_weight = st.q_norm;
  a.k_norm_weight = st.k_norm;
  a.kv_pool = cache.pool;
  a.block_tables = tables;
  a.cu_seqlens = cu;
  a.context_lens = ctx;
  a.out = out;
  a.num_heads = s.nh;
  a.num_kv_heads = s.nkv;
  a.head_dim = s.hd;
  a.rotary_dim = s.rot;
  a.block_size = cache.bs;
  a.rope_theta = s.theta;
  a.eps = s.eps;
  a.scale = s.scale();
  return a;
}

// Runs positions [from[i], to[i]) of the chosen sequences in one call. Returns out rows per sequence.
std::vector<std::vector<uint16_t>> run(const Streams& st, Cache& cache, const std::vector<int>& seqs,
                                       const std::vector<int>& from, const std::vector<int>& to) {
  const Shape& s = st.s;
  std::vector<uint16_t> qg, k, v;
  std::vector<int32_t> cu{0}, ctx, tables;
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const int i = seqs[b];
    const std::size_t qrow = s.nh * 2 * s.hd, kvrow = s.nkv * s.hd;
    qg.insert(qg.end(), st.qg[i].begin() + from[b] * qrow, st.qg[i].begin() + to[b] * qrow);
    k.insert(k.end(), st.k[i].begin() + from[b] * kvrow, st.k[i].begin() + to[b] * kvrow);
    v.insert(v.end(), st.v[i].begin() + from[b] * kvrow, st.v[i].begin() + to[b] * kvrow);
    cu.push_back(cu.back() + to[b] - from[b]);
    ctx.push_back(from[b]);
    tables.insert(tables.end(), cache.tables[i].begin(), cache.tables[i].end());
  }
  std::vector<uint16_t> out(static_cast<std::size_t>(cu.back()) * s.nh * s.hd);
  const att::GatedAttentionArgs a = make_args(s, qg, k, v, st, cache, tables, cu, ctx, out);
  att::gated_attention(a);
  std::vector<std::vector<uint16_t>> per_seq;
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    per_seq.emplace_back(out.begin() + cu[b] * s.nh * s.hd, out.begin() + cu[b + 1] * s.nh * s.hd);
  }
  return per_seq;
}

// The math in double: per head norm, RoPE, causal softmax over the whole history, gate.
std::vector<double> naive(const Streams& st, int i) {
  const Shape& s = st.s;
  const int L = st.lens[i], hd = s.hd, half = s.rot / 2;
  auto norm_rope = [&](const uint16_t* x, const std::vector<uint16_t>& w, int pos) {
    std::vector<double> y(hd), r(hd);
    double ss = 0;
    for (int d = 0; d < hd; ++d) ss += double(bf16_to_float(x[d])) * bf16_to_float(x[d]);
    const double inv = 1.0 / std::sqrt(ss / hd + s.eps);
    for (int d = 0; d < hd; ++d) y[d] = bf16_to_float(x[d]) * inv * (1.0 + bf16_to_float(w[d]));
    for (int d = 0; d < hd; ++d) {
      if (d >= s.rot) {
        r[d] = y[d];
        continue;
      }
      const int j = d < half ? d : d - half;
      const double ang = pos * std::pow(double(s.theta), -2.0 * j / s.rot);
      r[d] = d < half ? y[d] * std::cos(ang) - y[d + half] * std::sin(ang) : y[d] * std::cos(ang) + y[d - half] * std::sin(ang);
    }
    return r;
  };
  std::vector<std::vector<double>> K(static_cast<std::size_t>(L) * s.nkv);
  for (int p = 0; p < L; ++p)
    for (int g = 0; g < s.nkv; ++g) K[p * s.nkv + g] = norm_rope(&st.k[i][(p * s.nkv + g) * hd], st.k_norm, p);
  std::vector<double> out(static_cast<std::size_t>(L) * s.nh * hd);
  for (int t = 0; t < L; ++t) {
    for (int h = 0; h < s.nh; ++h) {
      const int g = h / (s.nh / s.nkv);
      const std::vector<double> q = norm_rope(&st.qg[i][(t * s.nh * 2 + 2 * h) * hd], st.q_norm, t);
      std::vector<double> sc(t + 1);
      double m = -INFINITY, l = 0;
      for (int p = 0; p <= t; ++p) {
        double dot = 0;
        for (int d = 0; d < hd; ++d) dot += q[d] * K[p * s.nkv + g][d];
        sc[p] = dot * s.scale();
        m = std::max(m, sc[p]);
      }
      for (int p = 0; p <= t; ++p) l += std::exp(sc[p] - m);
      for (int d = 0; d < hd; ++d) {
        double o = 0;
        for (int p = 0; p <= t; ++p) o += std::exp(sc[p] - m) / l * bf16_to_float(st.v[i][(p * s.nkv + g) * hd + d]);
        const double gate = bf16_to_float(st.qg[i][(t * s.nh * 2 + 2 * h + 1) * hd + d]);
        out[(t * s.nh + h) * hd + d] = o / (1.0 + std::exp(-gate));
      }
    }
  }
  return out;
}

double rel_error(const std::vector<uint16_t>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t j = 0; j < got.size(); ++j) {
    const double d = double(bf16_to_float(got[j])) - want[j];
    num += d * d;
    den += want[j] * want[j];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<int> all_of(std::size_t n) {
  std::vector<int> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

void check_case(const Shape& s, const std::vector<int>& lens) {
  const Streams st = make_streams(s, lens);
  const std::string name = "nh " + std::to_string(s.nh) + " nkv " + std::to_string(s.nkv) + " hd " +
                           std::to_string(s.hd) + " rot " + std::to_string(s.rot);
  const std::vector<int> seqs = all_of(lens.size()), zeros(lens.size(), 0);

  // One call, block size 4.
  Cache whole(s, 4, lens, 1);
  double worst = 0.0;
  const auto out = run(st, whole, seqs, zeros, lens);
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const double err = rel_error(out[i], naive(st, static_cast<int>(i)));
    CHECK_MSG(err < 1.5e-2, name + ": sequence " + std::to_string(i) + " vs double: rel error " + std::to_string(err));
    worst = std::max(worst, err);
  }
  std::printf("%s, lengths %zu: relative error vs double %.2e\n", name.c_str(), lens.size(), worst);

  // The same tokens as prefill chunks then decode steps, block size 1, other block order: same bits.
  Cache steps(s, 1, lens, 2);
  std::vector<std::vector<uint16_t>> stepped(lens.size());
  std::vector<int> at(lens.size(), 0);
  for (int round = 0;; ++round) {
    std::vector<int> sq, from, to;
    for (std::size_t i = 0; i < lens.size(); ++i) {
      if (at[i] >= lens[i]) continue;
      const int n = round == 0 ? std::max(1, lens[i] / 2) : round == 1 ? std::max(1, lens[i] / 4) : 1;
      sq.push_back(static_cast<int>(i));
      from.push_back(at[i]);
      to.push_back(std::min(lens[i], at[i] + n));
      at[i] = to.back();
    }
    if (sq.empty()) break;
    const auto part = run(st, steps, sq, from, to);
    for (std::size_t b = 0; b < sq.size(); ++b) stepped[sq[b]].insert(stepped[sq[b]].end(), part[b].begin(), part[b].end());
  }
  bool same_out = true, same_pool = true;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    same_out = same_out && stepped[i] == out[i];
    for (int p = 0; p < lens[i]; ++p)
      for (int kv = 0; kv < 2; ++kv)
        for (int g = 0; g < s.nkv; ++g)
          same_pool = same_pool && std::equal(whole.at(i, p, kv, g), whole.at(i, p, kv, g) + s.hd, steps.at(i, p, kv, g));
  }
  CHECK_MSG(same_out, name + ": chunks + decode steps with block size 1 give other bits than one call");
  CHECK_MSG(same_pool, name + ": the pools differ between one call and chunked calls");

  // Every instruction set this CPU runs and 1 or 3 threads: the same bits as the default.
  const cpu::Isa default_isa = cpu::isa();
  for (const cpu::Isa isa : {cpu::Isa::kPortable, cpu::Isa::kAvx2, cpu::Isa::kAvx512}) {
    if (!cpu::isa_supported(isa)) continue;
    for (const std::size_t threads : {std::size_t{1}, std::size_t{3}}) {
      cpu::set_isa(isa);
      cpu::set_num_threads(threads);
      Cache again(s, 4, lens, 1);
      const auto got = run(st, again, seqs, zeros, lens);
      CHECK_MSG(got == out, name + ": " + cpu::isa_name(isa) + " with " + std::to_string(threads) +
                                " thread(s) gives other bits than " + cpu::isa_name(default_isa));
    }
  }
  cpu::set_isa(default_isa);
  cpu::set_num_threads(1);

  // The last sequence alone: the same bits as inside the batch.
  const int last = static_cast<int>(lens.size()) - 1;
  Cache alone(s, 4, lens, 3);
  const auto solo = run(st, alone, {last}, {0}, {lens[last]});
  CHECK_MSG(solo[0] == out[last], name + ": a sequence alone differs from the same sequence in a batch");
}

void check_bad_arguments() {
  const Shape s{2, 1, 32, 8};
  const Streams st = make_streams(s, {3});
  Cache cache(s, 2, {3}, 0);
  std::vector<uint16_t> out(3 * s.nh * s.hd);
  std::vector<int32_t> cu{0, 3}, ctx{0};
  std::vector<int32_t> tables = cache.tables[0];
  auto args = [&] { return make_args(s, st.qg[0], st.k[0], st.v[0], st, cache, tables, cu, ctx, out); };
  att::gated_attention(args());  // the valid call
  CHECK(true);
  auto a = args();
  a.head_dim = 48;
  CHECK_THROWS(att::gated_attention(a), "head_dim");
  a = args();
  a.num_kv_heads = 3;
  CHECK_THROWS(att::gated_attention(a), "num_kv_heads");
  a = args();
  a.rotary_dim = 7;
  CHECK_THROWS(att::gated_attention(a), "rotary_dim");
  a = args();
  a.scale = 0.0f;
  CHECK_THROWS(att::gated_attention(a), "scale");
  a = args();
  a.rope_theta = -1.0f;
  CHECK_THROWS(att::gated_attention(a), "rope_theta");
  a = args();
  a.k = {st.k[0].data(), st.k[0].size() - 1};
  CHECK_THROWS(att::gated_attention(a), "k:");
  a = args();
  a.out = {out.data(), out.size() - 2};
  CHECK_THROWS(att::gated_attention(a), "out:");
  std::vector<int32_t> bad_cu{0, 2};
  a = args();
  a.cu_seqlens = bad_cu;
  CHECK_THROWS(att::gated_attention(a), "cu_seqlens");
  std::vector<int32_t> empty_seq{0, 0};
  a = args();
  a.cu_seqlens = empty_seq;
  CHECK_THROWS(att::gated_attention(a), "at least one token");
  std::vector<int32_t> neg_ctx{-1};
  a = args();
  a.context_lens = neg_ctx;
  CHECK_THROWS(att::gated_attention(a), "context_lens");
  std::vector<int32_t> long_ctx{2};  // 2 + 3 tokens need 3 blocks of 2; the row holds 2
  a = args();
  a.context_lens = long_ctx;
  CHECK_THROWS(att::gated_attention(a), "a row holds");
  std::vector<int32_t> bad_block = tables;
  bad_block[1] = cache.num_blocks;
  a = args();
  a.block_tables = bad_block;
  CHECK_THROWS(att::gated_attention(a), "outside [0, num_blocks");
  a = args();
  a.kv_pool = {cache.pool.data(), cache.pool.size() - 1};
  CHECK_THROWS(att::gated_attention(a), "kv_pool");
}

}  // namespace

int main() {
  check_case(Shape{4, 2, 32, 8}, {1, 5, 17});    // the tiny model's attention
  check_case(Shape{2, 2, 64, 16}, {9, 2});       // MHA, another rotary width
  check_case(Shape{4, 1, 128, 0}, {6});          // no RoPE
  check_case(Shape{4, 2, 256, 64}, {3, 33});     // Qwen3.5's head_dim and rotary_dim
  check_case(Shape{2, 1, 32, 32, 1e7f}, {40});   // full rotary, the model's theta
  check_bad_arguments();
  return qwen35_trt::test::report();
}
