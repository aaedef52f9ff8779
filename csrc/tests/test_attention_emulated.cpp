// ctest that runs the GatedAttention CUDA kernel source (attention_kernels.cuh) on the CPU
// (simt_emulator.h) and compares it with the C++ reference bit for bit: the output and the whole
// KV pool. Under the emulator both use the host's expf / cosf / sinf / powf and the same scalar
// code (attention_math.h), so any difference is a kernel bug (indexing, paging, the per-lane
// split of the dot product, the softmax order). Also: batch invariance, the device-side guards
// (a sequence with a bad block id or context is skipped, nothing written outside the tensors) and
// the host parameter checks. Small shapes (one OS thread per CUDA thread); the compiled kernels
// run in test_attention_cuda.
#include "simt_emulator.h"  // first: it redefines the CUDA built-ins for the kernel sources

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attention_kernels.cuh"
#include "attention_test_cases.h"
#include "check.h"

namespace kn = qwen35_trt::kernels;
namespace ai = qwen35_trt::kernels::attention_impl;
using qwen35_trt::testing::AttnCase;
using qwen35_trt::testing::AttnShape;
using qwen35_trt::testing::attention_reference;
using qwen35_trt::testing::fuse_rows;
using qwen35_trt::testing::FusedRows;
using qwen35_trt::testing::make_attn_case;
using qwen35_trt::testing::shape_params;
using qwen35_trt::testing::subset;
using qwen35_trt::nvfp4::bf16_to_float;
using qwen35_trt::nvfp4::float_to_bf16;

namespace {

constexpr uint16_t kSentinel = 0xFFFF;  // a NaN: unwritten output rows keep it
constexpr std::size_t kGuard = 64;      // elements of sentinel before and after out and the pool

const __nv_bfloat16* bf(const uint16_t* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
__nv_bfloat16* bf(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

// A buffer with kGuard sentinel elements on both sides, to see writes outside the tensor.
struct Guarded {
  std::vector<uint16_t> mem;
  explicit Guarded(const std::vector<uint16_t>& body) : mem(kGuard, kSentinel) {
    mem.insert(mem.end(), body.begin(), body.end());
    mem.insert(mem.end(), kGuard, kSentinel);
  }
  uint16_t* data() { return mem.data() + kGuard; }
  std::vector<uint16_t> body() const { return {mem.begin() + kGuard, mem.end() - kGuard}; }
  bool guards_intact() const {
    for (std::size_t i = 0; i < kGuard; ++i)
      if (mem[i] != kSentinel || mem[mem.size() - 1 - i] != kSentinel) return false;
    return true;
  }
};

// `one_block`: a single block along the token axis, so that the kernels' grid-stride loops
// (which cover what a capped grid does not) do all the work.
template <int E>
void launch_both(const kn::GatedAttentionParams& p, __nv_bfloat16* q, bool one_block) {
  const dim3 prepare = one_block ? dim3(1, ai::prepare_grid(p).y, 1) : ai::prepare_grid(p);
  const dim3 attend = one_block ? dim3(1, 1, 1) : ai::attend_grid(p);
  simt::launch(prepare, ai::kThreads, 0, [&] { ai::gated_attention_prepare_kernel<E>(p, q); });
  simt::launch(attend, ai::kThreads, 0, [&] { ai::gated_attention_attend_kernel<E>(p, q); });
}

// The launcher's sequence (validate, prepare, attend) on the emulator.
void run_kernels(const kn::GatedAttentionParams& p, bool one_block) {
  const std::size_t bytes = kn::gated_attention_workspace_bytes(p.tokens, p.num_heads, p.head_dim);
  const std::string e = kn::validate_gated_attention(p, bytes);
  CHECK_MSG(e.empty(), e);
  if (!e.empty()) return;
  std::vector<uint16_t> ws(bytes / 2 + 8, kSentinel);
  uint16_t* q = ws.data() + (16 - reinterpret_cast<uintptr_t>(ws.data()) % 16) % 16 / 2;
  switch (p.head_dim / 32) {
    case 1: launch_both<1>(p, bf(q), one_block); break;
    case 2: launch_both<2>(p, bf(q), one_block); break;
    case 3: launch_both<3>(p, bf(q), one_block); break;
    case 4: launch_both<4>(p, bf(q), one_block); break;
    case 5: launch_both<5>(p, bf(q), one_block); break;
    case 6: launch_both<6>(p, bf(q), one_block); break;
    case 7: launch_both<7>(p, bf(q), one_block); break;
    case 8: launch_both<8>(p, bf(q), one_block); break;
    default: CHECK_MSG(false, "head_dim " + std::to_string(p.head_dim));
  }
}

// Runs the kernels on a case: qg, k and v dense, or (fused_pad >= 0) as slices of one buffer
// with fused_pad extra columns. Returns out and the pool (guards checked).
struct KernelResult {
  std::vector<uint16_t> out, pool;
  bool guards_intact = false;
};

KernelResult run_case(const AttnCase& c, int fused_pad, const std::vector<int32_t>* tables = nullptr,
                      const std::vector<int32_t>* ctx = nullptr, bool one_block = false) {
  Guarded out(std::vector<uint16_t>(static_cast<std::size_t>(c.T()) * c.out_width(), kSentinel));
  Guarded pool(c.pool);
  FusedRows f;
  kn::GatedAttentionParams p = shape_params(c);
  if (fused_pad >= 0) {
    f = fuse_rows(c, fused_pad);
    p.qg = bf(f.data.data() + f.qg_col);
    p.k = bf(f.data.data() + f.k_col);
    p.v = bf(f.data.data() + f.v_col);
    p.qg_stride = p.k_stride = p.v_stride = f.stride;
  } else {
    p.qg = bf(c.qg.data());
    p.k = bf(c.k.data());
    p.v = bf(c.v.data());
  }
  p.q_norm_weight = bf(c.q_w.data());
  p.k_norm_weight = bf(c.k_w.data());
  p.kv_pool = bf(pool.data());
  p.block_tables = (tables ? *tables : c.tables).data();
  p.cu_seqlens = c.cu.data();
  p.context_lens = (ctx ? *ctx : c.ctx).data();
  p.out = bf(out.data());
  run_kernels(p, one_block);
  return {out.body(), pool.body(), out.guards_intact() && pool.guards_intact()};
}

std::string describe(const std::string& name, const AttnCase& c) {
  std::string s = name + " (nh " + std::to_string(c.s.nh) + " nkv " + std::to_string(c.s.nkv) + " hd " +
                  std::to_string(c.s.hd) + " rot " + std::to_string(c.s.rot) + " bs " + std::to_string(c.s.bs) +
                  "; len/ctx";
  for (int i = 0; i < c.B(); ++i) {
    s += ' ';
    s += std::to_string(c.lens[i]);
    s += '/';
    s += std::to_string(c.ctx[i]);
  }
  return s + ")";
}

std::size_t count_diff(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

int cases_run = 0;

// The dot product of the attend kernel against head_dot on vectors whose fp32 sum depends on the
// order: a +2^24 and a -2^24 product that cancel and products of 1 that survive only when added
// after the cancellation, spread over the head (the butterfly's order matters) or, every other
// trial, inside one lane (the lane's order matters; from 3 dims per lane on). Random data alone
// would hardly show an order change: the score is rounded to bf16.
template <int E>
void check_dot_order() {
  constexpr int HD = 32 * E, kTrials = 64;
  qwen35_trt::testing::Random gen(300 + E);
  std::uniform_int_distribution<int> at(0, HD - 1);
  std::vector<uint16_t> q(static_cast<std::size_t>(kTrials) * HD, 0), k(q.size(), 0);
  const uint16_t one = float_to_bf16(1.0f), big = float_to_bf16(4096.0f), minus_big = float_to_bf16(-4096.0f);
  for (int trial = 0; trial < kTrials; ++trial) {
    uint16_t* qt = q.data() + trial * HD;
    uint16_t* kt = k.data() + trial * HD;
    for (int i = 0; i < 3; ++i) {  // products of 1 (later writes may overwrite: fine)
      const int d = at(gen.rng);
      qt[d] = kt[d] = one;
    }
    int a = at(gen.rng), b = at(gen.rng), c = -1;
    if (trial % 2 == 1 && E >= 3) {
      int dims[E];
      std::iota(dims, dims + E, 0);
      std::shuffle(dims, dims + E, gen.rng);
      const int lane0 = (a / E) * E;
      a = lane0 + dims[0];
      b = lane0 + dims[1];
      c = lane0 + dims[2];
      qt[c] = kt[c] = one;
    }
    qt[a] = kt[a] = big;  // +2^24
    if (b != a && b != c) {
      qt[b] = big;
      kt[b] = minus_big;  // -2^24
    }
  }
  std::vector<float> got(static_cast<std::size_t>(kTrials) * 32);
  simt::launch(dim3(1), 32, 0, [&] {
    const int lane = static_cast<int>(threadIdx.x);
    for (int trial = 0; trial < kTrials; ++trial) {
      float qv[E];
      ai::load_row<E>(bf(q.data() + trial * HD + lane * E), qv);
      got[trial * 32 + lane] = ai::key_score<E>(qv, bf(k.data() + trial * HD + lane * E), 1.0f);
    }
  });
  int mismatches = 0, order_sensitive = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    std::vector<float> qf(HD), kf(HD);
    float naive = 0.0f;
    for (int d = 0; d < HD; ++d) {
      qf[d] = bf16_to_float(q[trial * HD + d]);
      kf[d] = bf16_to_float(k[trial * HD + d]);
      naive += qf[d] * kf[d];
    }
    const float want = qwen35_trt::attention::score_from_dot(qwen35_trt::attention::head_dot(qf.data(), kf.data(), HD), 1.0f);
    order_sensitive += qwen35_trt::attention::score_from_dot(naive, 1.0f) != want;
    for (int lane = 0; lane < 32; ++lane) mismatches += got[trial * 32 + lane] != want;
  }
  std::printf("dot order, hd %d: %d of %d trials where a sequential sum differs; %d lane mismatches\n", HD,
              order_sensitive, kTrials, mismatches);
  CHECK_MSG(mismatches == 0, "key_score differs from head_dot at hd " + std::to_string(HD));
  CHECK_MSG(order_sensitive > 0, "the dot-order inputs do not depend on the order at hd " + std::to_string(HD));
}

void check_case(const std::string& name, unsigned seed, const AttnShape& s, const std::vector<int>& lens,
                const std::vector<int>& ctx, int fused_pad, bool one_block = false) {
  qwen35_trt::testing::Random gen(seed);
  const AttnCase c = make_attn_case(gen, s, lens, ctx);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint16_t> out_ref, pool_ref;
  attention_reference(c, out_ref, pool_ref);
  const KernelResult r = run_case(c, fused_pad, nullptr, nullptr, one_block);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string where = describe(name, c);
  const std::size_t dout = count_diff(r.out, out_ref), dpool = count_diff(r.pool, pool_ref);
  std::printf("%s: %zu / %zu out and %zu / %zu pool elements differ (%.0f ms)\n", where.c_str(), dout, r.out.size(),
              dpool, r.pool.size(), ms);
  CHECK_MSG(dout == 0, where + ": out differs from the reference");
  CHECK_MSG(dpool == 0, where + ": kv_pool differs from the reference");
  CHECK_MSG(r.guards_intact, where + ": written outside out or kv_pool");
  ++cases_run;
}

// A sequence alone and inside a batch give the same bits (its out rows and the pool).
void check_batch_invariance() {
  qwen35_trt::testing::Random gen(901);
  const AttnCase all = make_attn_case(gen, {4, 2, 64, 16, 4}, {3, 4, 1, 2}, {5, 0, 7, 2});
  const KernelResult batch = run_case(all, 8);
  for (int i = 0; i < all.B(); ++i) {
    const AttnCase one = subset(all, {i});
    const KernelResult alone = run_case(one, -1);
    const auto w = static_cast<std::size_t>(all.out_width());
    const std::vector<uint16_t> rows(batch.out.begin() + all.cu[i] * w, batch.out.begin() + all.cu[i + 1] * w);
    CHECK_MSG(rows == alone.out, "batch invariance: sequence " + std::to_string(i) + " out differs alone vs in the batch");
    // The pool after the batch has every sequence's new keys; after the single call only this one's.
    std::vector<uint16_t> expected = all.pool;
    const std::size_t be = all.block_elems();
    for (int64_t j = 0; j < qwen35_trt::testing::blocks_used(all, i); ++j) {
      const std::size_t b = static_cast<std::size_t>(all.tables[i * all.max_blocks + j]);
      std::copy_n(batch.pool.begin() + b * be, be, expected.begin() + b * be);
    }
    CHECK_MSG(alone.pool == expected, "batch invariance: sequence " + std::to_string(i) + " pool differs");
  }
  std::printf("batch invariance: %d sequences alone == in the batch\n", all.B());
  ++cases_run;
}

// Values only the device sees: a sequence with a block id out of range (negative, num_blocks) or
// a context too long for its table row is skipped (its out rows keep the sentinel, it writes no
// key); the others match the reference run without it; nothing is written outside the tensors.
void check_device_guards() {
  qwen35_trt::testing::Random gen(77);
  const AttnCase c = make_attn_case(gen, {4, 2, 32, 8, 4}, {3, 2, 1}, {2, 6, 9});
  const int bad = 1;
  std::vector<uint16_t> out_ref, pool_ref;
  attention_reference(subset(c, {0, 2}), out_ref, pool_ref);
  for (int which = 0; which < 4; ++which) {
    std::vector<int32_t> tables = c.tables, ctx = c.ctx;
    std::string what;
    const int64_t last = qwen35_trt::testing::blocks_used(c, bad) - 1;
    if (which == 0) {
      tables[bad * c.max_blocks + 0] = -1;
      what = "block id -1";
    } else if (which == 1) {
      tables[bad * c.max_blocks + last] = static_cast<int32_t>(c.num_blocks);
      what = "block id num_blocks (last used block)";
    } else if (which == 2) {
      ctx[bad] = static_cast<int32_t>(c.max_blocks * c.s.bs);
      what = "context beyond the table row";
    } else {
      ctx[bad] = -3;
      what = "negative context";
    }
    const KernelResult r = run_case(c, 0, &tables, &ctx);
    const auto w = static_cast<std::size_t>(c.out_width());
    std::vector<uint16_t> expected(r.out.size(), kSentinel);
    std::copy_n(out_ref.begin(), c.cu[1] * w, expected.begin());
    std::copy_n(out_ref.begin() + c.cu[1] * w, (c.cu[3] - c.cu[2]) * w, expected.begin() + c.cu[2] * w);
    CHECK_MSG(r.out == expected, "device guard (" + what + "): out rows");
    CHECK_MSG(r.pool == pool_ref, "device guard (" + what + "): kv_pool");
    CHECK_MSG(r.guards_intact, "device guard (" + what + "): written outside out or kv_pool");
  }
  std::printf("device guards: 4 kinds of bad sequence skipped, the others exact\n");
  ++cases_run;
}

// Every field the launcher checks on the host: the message starts with its name.
void check_validation() {
  qwen35_trt::testing::Random gen(5);
  AttnCase c = make_attn_case(gen, {4, 2, 64, 16, 4}, {3, 1}, {0, 5});
  std::vector<uint16_t> out(static_cast<std::size_t>(c.T()) * c.out_width());
  kn::GatedAttentionParams good = shape_params(c);
  good.qg = bf(c.qg.data());
  good.k = bf(c.k.data());
  good.v = bf(c.v.data());
  good.q_norm_weight = bf(c.q_w.data());
  good.k_norm_weight = bf(c.k_w.data());
  good.kv_pool = bf(c.pool.data());
  good.block_tables = c.tables.data();
  good.cu_seqlens = c.cu.data();
  good.context_lens = c.ctx.data();
  good.out = bf(out.data());
  const std::size_t need = kn::gated_attention_workspace_bytes(c.T(), c.s.nh, c.s.hd);
  CHECK(need == static_cast<std::size_t>(c.T()) * c.s.nh * c.s.hd * 2 && need % 256 == 0);
  CHECK(kn::gated_attention_workspace_bytes(3, 1, 32) == 256);
  CHECK(kn::validate_gated_attention(good, need).empty());
  int refusals = 0;
  auto refused = [&](const char* field, auto mutate, std::size_t ws = 0) {
    kn::GatedAttentionParams p = good;
    mutate(p);
    const std::string m = kn::validate_gated_attention(p, ws ? ws : need);
    CHECK_MSG(m.rfind(std::string(field) + ":", 0) == 0 || m.rfind(std::string(field) + "_stride:", 0) == 0,
              std::string("expected a message about ") + field + ", got '" + m + "'");
    ++refusals;
  };
  using P = kn::GatedAttentionParams&;
  const auto misalign = [](const __nv_bfloat16* x) {
    return reinterpret_cast<const __nv_bfloat16*>(reinterpret_cast<const char*>(x) + 2);
  };
  refused("head_dim", [](P p) { p.head_dim = 48; });
  refused("head_dim", [](P p) { p.head_dim = 288; });
  refused("head_dim", [](P p) { p.head_dim = 0; });
  refused("num_heads", [](P p) { p.num_heads = 0; });
  refused("num_kv_heads", [](P p) { p.num_kv_heads = 3; });
  refused("num_kv_heads", [](P p) { p.num_kv_heads = 0; });
  refused("rotary_dim", [](P p) { p.rotary_dim = 7; });
  refused("rotary_dim", [](P p) { p.rotary_dim = 66; });
  refused("rotary_dim", [](P p) { p.rotary_dim = -2; });
  refused("rope_theta", [](P p) { p.rope_theta = 0.0f; });
  refused("rope_theta", [](P p) { p.rope_theta = NAN; });
  refused("eps", [](P p) { p.eps = -1e-6f; });
  refused("eps", [](P p) { p.eps = NAN; });
  refused("scale", [](P p) { p.scale = 0.0f; });
  refused("scale", [](P p) { p.scale = INFINITY; });
  refused("scale", [](P p) { p.scale = NAN; });
  refused("batch", [](P p) { p.batch = 0; });
  refused("tokens", [](P p) { p.tokens = 1; });
  refused("tokens", [](P p) { p.tokens = int64_t{1} << 31; });
  refused("block_size", [](P p) { p.block_size = 0; });
  refused("num_blocks", [](P p) { p.num_blocks = 0; });
  refused("max_blocks_per_seq", [](P p) { p.max_blocks_per_seq = 0; });
  refused("qg", [](P p) { p.qg = nullptr; });
  refused("qg", [&](P p) { p.qg = misalign(p.qg); });
  refused("qg_stride", [](P p) { p.qg_stride = 260; });
  refused("qg_stride", [](P p) { p.qg_stride -= 8; });
  refused("k", [](P p) { p.k = nullptr; });
  refused("k_stride", [](P p) { p.k_stride = 120; });
  refused("v", [&](P p) { p.v = misalign(p.v); });
  refused("v_stride", [](P p) { p.v_stride = 132; });
  refused("out", [](P p) { p.out = nullptr; });
  refused("out_stride", [](P p) { p.out_stride = 8; });
  refused("q_norm_weight", [](P p) { p.q_norm_weight = nullptr; });
  refused("k_norm_weight", [&](P p) { p.k_norm_weight = misalign(p.k_norm_weight); });
  refused("kv_pool", [](P p) { p.kv_pool = nullptr; });
  refused("block_tables", [](P p) { p.block_tables = nullptr; });
  refused("cu_seqlens", [](P p) { p.cu_seqlens = nullptr; });
  refused("context_lens", [](P p) { p.context_lens = nullptr; });
  refused("workspace_bytes", [](P) {}, need - 1);
  std::printf("host validation: %d bad parameter sets refused, each naming its field\n", refusals);
}

}  // namespace

int main() {
  const auto t0 = std::chrono::steady_clock::now();
  check_dot_order<1>();
  check_dot_order<2>();
  check_dot_order<3>();
  check_dot_order<4>();
  check_dot_order<5>();
  check_dot_order<8>();
  // A new prompt, chunks continuing a cached context and decode tokens in one batch.
  check_case("hd 32 mixed, fused rows", 1, {4, 2, 32, 8, 4}, {17, 9, 1, 1}, {0, 23, 40, 3}, 8);
  check_case("hd 64 decode, 8 query heads per kv head", 2, {8, 1, 64, 32, 16}, {1, 1, 1, 1, 1, 1},
             {0, 15, 16, 17, 63, 100}, -1);
  check_case("hd 128 block 1", 3, {4, 2, 128, 64, 1, 1e7f}, {12, 3}, {7, 0}, 0);
  check_case("hd 256 block 16", 4, {4, 2, 256, 64, 16, 1e7f}, {6, 1, 1}, {30, 70, 0}, 8);
  check_case("hd 96 full rotary", 5, {4, 2, 96, 96, 4}, {5, 1}, {1, 13}, -1);
  check_case("hd 160 no rotary", 6, {2, 2, 160, 0, 4}, {3, 1}, {0, 9}, 16);
  check_case("hd 192", 7, {2, 1, 192, 64, 8}, {3, 1}, {6, 0}, -1);
  check_case("hd 224", 8, {2, 2, 224, 32, 2}, {2, 1}, {3, 4}, 8);
  check_case("hd 128 long context", 9, {2, 1, 128, 32, 16}, {1, 20}, {250, 100}, -1);
  check_case("hd 32 mixed, one block per kernel", 1, {4, 2, 32, 8, 4}, {17, 9, 1, 1}, {0, 23, 40, 3}, 8, true);
  check_batch_invariance();
  check_device_guards();
  check_validation();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%d emulated cases in %.1f s\n", cases_run, s);
  return qwen35_trt::test::report();
}
