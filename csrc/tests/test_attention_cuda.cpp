// ctest for the GatedAttention CUDA kernels (qwen35_trt/kernels/attention.h) against the C++ CPU
// reference (qwen35_trt/attention.h) on random bf16 inputs: realistic shapes (nh 16, nkv 2,
// hd 256, partial RoPE, block 16) with prompts, a chunk continuing a long cached context and
// decode tokens; block 1; fused (strided) q/k/v rows; batch invariance; the device-side guards;
// the launcher's refusals.
// Thresholds: the kernels run the reference's operations in its order, so they differ only where
// the device's expf / cosf / sinf / powf differ from the host's in the last place: out within
// bf16 rounding (relative error < 1e-2, in practice far less), the pool's new keys equal except
// rare last-bit flips (< 0.1 % of their elements), the new values and every other pool element
// exactly equal. Outputs are poisoned (NaN) before each run so unwritten elements fail.
// The launcher's refusals run first and need no GPU; the rest exits 77 (ctest SKIP_RETURN_CODE)
// with "SKIPPED: no CUDA device" when no GPU is usable.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "attention_test_cases.h"
#include "check.h"
#include "cuda_test_util.h"
#include "qwen35_trt/kernels/attention.h"

namespace kn = qwen35_trt::kernels;
using qwen35_trt::testing::AttnCase;
using qwen35_trt::testing::AttnShape;
using qwen35_trt::testing::attention_reference;
using qwen35_trt::testing::blocks_used;
using qwen35_trt::testing::DeviceBuffer;
using qwen35_trt::testing::fuse_rows;
using qwen35_trt::testing::FusedRows;
using qwen35_trt::testing::make_attn_case;
using qwen35_trt::testing::rel_error;
using qwen35_trt::testing::shape_params;
using qwen35_trt::testing::subset;

namespace {

constexpr uint16_t kSentinel = 0xFFFF;  // a NaN
constexpr std::size_t kGuard = 64;      // sentinel elements before and after the pool

qwen35_trt::testing::Random gen(2027);

__nv_bfloat16* bf(uint16_t* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

struct DeviceResult {
  std::vector<uint16_t> out, pool;
  bool pool_guards_intact = false;
};

// One launch on the device: qg, k and v dense or (fused_pad >= 0) column slices of one buffer;
// optional replacement block tables / context lengths (the device-guard cases).
DeviceResult run_device(const AttnCase& c, int fused_pad, const std::vector<int32_t>* tables = nullptr,
                        const std::vector<int32_t>* ctx = nullptr) {
  std::vector<uint16_t> pool_mem(kGuard, kSentinel);
  pool_mem.insert(pool_mem.end(), c.pool.begin(), c.pool.end());
  pool_mem.insert(pool_mem.end(), kGuard, kSentinel);
  const FusedRows f = fuse_rows(c, fused_pad < 0 ? 0 : fused_pad);
  DeviceBuffer<uint16_t> rows(fused_pad >= 0 ? f.data : std::vector<uint16_t>{}), qg(c.qg), k(c.k), v(c.v),
      qw(c.q_w), kw(c.k_w), pool(pool_mem), out(static_cast<std::size_t>(c.T()) * c.out_width());
  DeviceBuffer<int32_t> dtables(tables ? *tables : c.tables), cu(c.cu), dctx(ctx ? *ctx : c.ctx);
  CUDA_OK(cudaMemset(out.p, 0xFF, out.n * sizeof(uint16_t)));
  kn::GatedAttentionParams p = shape_params(c);
  if (fused_pad >= 0) {
    p.qg = bf(rows.p + f.qg_col);
    p.k = bf(rows.p + f.k_col);
    p.v = bf(rows.p + f.v_col);
    p.qg_stride = p.k_stride = p.v_stride = f.stride;
  } else {
    p.qg = bf(qg.p);
    p.k = bf(k.p);
    p.v = bf(v.p);
  }
  p.q_norm_weight = bf(qw.p);
  p.k_norm_weight = bf(kw.p);
  p.kv_pool = bf(pool.p + kGuard);
  p.block_tables = dtables.p;
  p.cu_seqlens = cu.p;
  p.context_lens = dctx.p;
  p.out = bf(out.p);
  const std::size_t ws_bytes = kn::gated_attention_workspace_bytes(p.tokens, p.num_heads, p.head_dim);
  DeviceBuffer<unsigned char> ws(ws_bytes);
  const std::string e = kn::validate_gated_attention(p, ws_bytes);
  CHECK_MSG(e.empty(), e);
  CUDA_OK(kn::gated_attention(p, ws.p, ws_bytes, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  DeviceResult r;
  r.out = out.download();
  const auto pm = pool.download();
  r.pool.assign(pm.begin() + kGuard, pm.end() - kGuard);
  r.pool_guards_intact = std::all_of(pm.begin(), pm.begin() + kGuard, [](uint16_t x) { return x == kSentinel; }) &&
                         std::all_of(pm.end() - kGuard, pm.end(), [](uint16_t x) { return x == kSentinel; });
  return r;
}

// Per pool element: 0 = not written by the call, 1 = a new key, 2 = a new value.
std::vector<uint8_t> new_rows_mask(const AttnCase& c) {
  std::vector<uint8_t> mask(c.pool.size(), 0);
  const std::size_t hd = c.s.hd, bs = c.s.bs, nkv = c.s.nkv;
  for (int i = 0; i < c.B(); ++i) {
    for (int64_t pos = c.ctx[i]; pos < c.ctx[i] + c.lens[i]; ++pos) {
      const auto b = static_cast<std::size_t>(c.tables[i * c.max_blocks + pos / c.s.bs]);
      for (int kind = 0; kind < 2; ++kind)
        for (std::size_t g = 0; g < nkv; ++g) {
          const std::size_t off = (((b * 2 + kind) * nkv + g) * bs + static_cast<std::size_t>(pos) % bs) * hd;
          std::fill_n(mask.begin() + off, hd, static_cast<uint8_t>(1 + kind));
        }
    }
  }
  return mask;
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

void check_case(const std::string& name, const AttnShape& s, const std::vector<int>& lens, const std::vector<int>& ctx,
                int fused_pad) {
  const AttnCase c = make_attn_case(gen, s, lens, ctx);
  std::vector<uint16_t> out_ref, pool_ref;
  attention_reference(c, out_ref, pool_ref);
  const DeviceResult r = run_device(c, fused_pad);
  const std::string where = describe(name, c);

  double max_abs = 0.0;
  std::size_t out_diff = 0;
  for (std::size_t i = 0; i < r.out.size(); ++i) {
    const double d = std::fabs(static_cast<double>(qwen35_trt::testing::to_f(r.out[i])) - qwen35_trt::testing::to_f(out_ref[i]));
    max_abs = std::max(max_abs, std::isnan(d) ? INFINITY : d);
    out_diff += r.out[i] != out_ref[i];
  }
  const double e = rel_error(r.out, out_ref);
  const auto mask = new_rows_mask(c);
  std::size_t new_keys = 0, key_flips = 0, value_diff = 0, other_diff = 0;
  for (std::size_t i = 0; i < mask.size(); ++i) {
    const bool differ = r.pool[i] != pool_ref[i];
    if (mask[i] == 1) {
      ++new_keys;
      key_flips += differ;
    } else if (mask[i] == 2) {
      value_diff += differ;
    } else {
      other_diff += differ;
    }
  }
  std::printf("%s: out rel error %.2e, max abs diff %.3g, %zu / %zu differ; new keys: %zu / %zu differ\n", where.c_str(),
              e, max_abs, out_diff, r.out.size(), key_flips, new_keys);
  CHECK_MSG(e < 1e-2, where + ": out rel error " + std::to_string(e));
  CHECK_MSG(key_flips * 1000 < new_keys, where + ": " + std::to_string(key_flips) + " new key elements differ");
  CHECK_MSG(value_diff == 0, where + ": new values differ from the reference");
  CHECK_MSG(other_diff == 0, where + ": pool elements the call must not write changed");
  CHECK_MSG(r.pool_guards_intact, where + ": written outside the pool");
}

// A sequence alone and inside the batch: the same bits.
void check_batch_invariance() {
  const AttnCase all = make_attn_case(gen, {16, 2, 256, 64, 16, 1e7f}, {70, 1, 33, 1}, {0, 300, 129, 17});
  const DeviceResult batch = run_device(all, 0);
  const auto w = static_cast<std::size_t>(all.out_width());
  for (int i = 0; i < all.B(); ++i) {
    const DeviceResult alone = run_device(subset(all, {i}), -1);
    const std::vector<uint16_t> rows(batch.out.begin() + all.cu[i] * w, batch.out.begin() + all.cu[i + 1] * w);
    CHECK_MSG(rows == alone.out, "batch invariance: sequence " + std::to_string(i) + " out differs alone vs in the batch");
    std::vector<uint16_t> expected = all.pool;
    const std::size_t be = all.block_elems();
    for (int64_t j = 0; j < blocks_used(all, i); ++j) {
      const auto b = static_cast<std::size_t>(all.tables[i * all.max_blocks + j]);
      std::copy_n(batch.pool.begin() + b * be, be, expected.begin() + b * be);
    }
    CHECK_MSG(alone.pool == expected, "batch invariance: sequence " + std::to_string(i) + " pool differs");
  }
  std::printf("batch invariance: %d sequences alone == in the batch\n", all.B());
}

// A bad block id or context: that sequence is skipped, the others are as without it.
void check_device_guards() {
  const AttnCase c = make_attn_case(gen, {8, 2, 128, 32, 16}, {40, 5, 1}, {0, 60, 200});
  const int bad = 1;
  const DeviceResult ref = run_device(subset(c, {0, 2}), 0);
  for (int which = 0; which < 3; ++which) {
    std::vector<int32_t> tables = c.tables, ctx = c.ctx;
    std::string what;
    if (which == 0) {
      tables[bad * c.max_blocks + blocks_used(c, bad) - 1] = static_cast<int32_t>(c.num_blocks);
      what = "block id num_blocks";
    } else if (which == 1) {
      tables[bad * c.max_blocks] = -5;
      what = "negative block id";
    } else {
      ctx[bad] = static_cast<int32_t>(c.max_blocks * c.s.bs);
      what = "context beyond the table row";
    }
    const DeviceResult r = run_device(c, 0, &tables, &ctx);
    const auto w = static_cast<std::size_t>(c.out_width());
    std::vector<uint16_t> expected(r.out.size(), kSentinel);
    std::copy_n(ref.out.begin(), c.cu[1] * w, expected.begin());
    std::copy_n(ref.out.begin() + c.cu[1] * w, (c.cu[3] - c.cu[2]) * w, expected.begin() + c.cu[2] * w);
    CHECK_MSG(r.out == expected, "device guard (" + what + "): out rows");
    CHECK_MSG(r.pool == ref.pool, "device guard (" + what + "): kv_pool");
    CHECK_MSG(r.pool_guards_intact, "device guard (" + what + "): written outside the pool");
  }
  std::printf("device guards: 3 kinds of bad sequence skipped, the others unchanged\n");
}

// The launcher refuses invalid parameters before any CUDA call (so this runs without a GPU):
// cudaErrorInvalidValue, with validate_gated_attention naming the field.
void check_launcher_refusals() {
  const AttnCase c = make_attn_case(gen, {4, 2, 64, 16, 4}, {3, 1}, {0, 5});
  alignas(16) static uint16_t host[64];  // pointers are only checked, never dereferenced
  kn::GatedAttentionParams good = shape_params(c);
  good.qg = good.k = good.v = good.q_norm_weight = good.k_norm_weight = bf(host);
  good.kv_pool = good.out = bf(host);
  good.block_tables = good.cu_seqlens = good.context_lens = reinterpret_cast<const int32_t*>(host);
  const std::size_t need = kn::gated_attention_workspace_bytes(c.T(), c.s.nh, c.s.hd);
  CHECK(kn::validate_gated_attention(good, need).empty());
  auto refused = [&](const char* field, kn::GatedAttentionParams p, std::size_t ws_bytes, void* ws) {
    const std::string m = kn::validate_gated_attention(p, ws_bytes);
    if (field[0] != '\0') {
      CHECK_MSG(m.rfind(field, 0) == 0, std::string("expected a message about ") + field + ", got '" + m + "'");
    }
    CHECK(kn::gated_attention(p, ws, ws_bytes, nullptr) == cudaErrorInvalidValue);
  };
  auto p = good;
  p.head_dim = 48;
  refused("head_dim", p, need, host);
  p = good;
  p.num_kv_heads = 3;
  refused("num_kv_heads", p, need, host);
  p = good;
  p.rotary_dim = 5;
  refused("rotary_dim", p, need, host);
  p = good;
  p.k_stride = 100;
  refused("k_stride", p, need, host);
  p = good;
  p.out = nullptr;
  refused("out", p, need, host);
  p = good;
  p.scale = NAN;
  refused("scale", p, need, host);
  p = good;
  p.block_size = 0;
  refused("block_size", p, need, host);
  refused("workspace_bytes", good, need - 1, host);
  refused("", good, need, nullptr);                                      // no workspace
  refused("", good, need, reinterpret_cast<char*>(host) + 2);            // misaligned workspace
}

}  // namespace

int main() {
  check_launcher_refusals();
  if (qwen35_trt::test::failed() > 0) return qwen35_trt::test::report();
  if (!qwen35_trt::testing::have_cuda_device()) return qwen35_trt::testing::kSkip;

  // The 35B-A3B attention shape: prompts, a chunk after a long cached context, decode tokens.
  check_case("qwen3.5 prefill + decode", {16, 2, 256, 64, 16, 1e7f}, {200, 64, 1, 1, 1}, {0, 900, 1000, 511, 0}, 0);
  check_case("qwen3.5 decode batch", {16, 2, 256, 64, 16, 1e7f}, {1, 1, 1, 1, 1, 1, 1, 1},
             {0, 1, 15, 16, 17, 255, 256, 999}, -1);
  check_case("block 1, dense rows", {8, 1, 128, 64, 1}, {37, 1}, {5, 70}, -1);
  check_case("hd 64, fused rows with padding", {4, 4, 64, 64, 4}, {20, 3}, {0, 30}, 8);
  check_case("hd 96 (3 dims per lane)", {6, 2, 96, 32, 8}, {9, 1}, {3, 12}, 0);
  check_case("hd 32, rotary 8", {4, 2, 32, 8, 4}, {5, 3, 1}, {0, 6, 9}, 8);
  check_batch_invariance();
  check_device_guards();
  return qwen35_trt::test::report();
}
