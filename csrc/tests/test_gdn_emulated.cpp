// ctest that runs the Gated DeltaNet CUDA kernel source on the CPU (simt_emulator.h) and compares
// it with the C++ reference: indexing, shared-memory tiles, barriers, the plan / transform / state
// split of the chunked prefill and the tensor-core fragment mapping are checked on every build,
// GPU or not. Small shapes only (the emulator runs each CUDA thread as an OS thread); the real
// kernels on a real GPU are tested by test_gdn_cuda. Thresholds as there: conv and recurrent
// < 2e-3 relative (rounding only), chunked prefill < 1e-2 (bf16 MMA operands).
#include "simt_emulator.h"  // first: it redefines the CUDA built-ins for the kernel sources

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "gdn_test_cases.h"
#include "chunk_prefill_kernels.cuh"
#include "conv1d_kernel.cuh"
#include "qwen35_trt/gdn.h"
#include "recurrent_kernel.cuh"

namespace gdn = qwen35_trt::gdn;
namespace kn = qwen35_trt::kernels;
using qwen35_trt::nvfp4::bf16_to_float;
using qwen35_trt::nvfp4::float_to_bf16;

namespace {

using qwen35_trt::testing::cu_of;
using qwen35_trt::testing::gdn_reference;
using qwen35_trt::testing::GdnCase;
using qwen35_trt::testing::make_gdn_case;
using qwen35_trt::testing::rel_error;

qwen35_trt::testing::Random gen(777);

const __nv_bfloat16* bf(const std::vector<uint16_t>& v) { return reinterpret_cast<const __nv_bfloat16*>(v.data()); }
__nv_bfloat16* bf(std::vector<uint16_t>& v) { return reinterpret_cast<__nv_bfloat16*>(v.data()); }

// ---------------------------------------------------------------------------------------------

void check_conv(int C, int W, const std::vector<int>& lens, bool decode) {
  const auto cu = cu_of(lens);
  const int B = static_cast<int>(lens.size()), T = cu.back(), slots = B + 2;
  auto x = gen.randn_bf16(static_cast<std::size_t>(T) * C), w = gen.randn_bf16(static_cast<std::size_t>(C) * W, 0.5f);
  auto pool0 = gen.randn_bf16(static_cast<std::size_t>(slots) * C * (W - 1));
  std::vector<int32_t> slot_ids(B);
  for (int i = 0; i < B; ++i) slot_ids[i] = slots - 1 - i;
  std::vector<uint8_t> init(B);
  for (int i = 0; i < B; ++i) init[i] = static_cast<uint8_t>(decode || i % 2 == 0);

  std::vector<uint16_t> y_ref(x.size()), pool_ref = pool0;
  gdn::CausalConv1dArgs<uint16_t> r;
  r.x = x;
  r.weight = w;
  r.state_pool = pool_ref;
  r.seqs.slots = slot_ids;
  if (!decode) {
    r.seqs.cu_seqlens = cu;
    r.seqs.has_initial_state = init;
  }
  r.y = y_ref;
  r.channels = C;
  r.width = W;
  gdn::causal_conv1d(r);

  std::vector<uint16_t> y(x.size(), 0xFFFF), pool = pool0;
  kn::CausalConv1dParams p;
  p.x = bf(x);
  p.x_stride = C;
  p.weight = bf(w);
  p.state_pool = bf(pool);
  p.y = bf(y);
  p.y_stride = C;
  p.channels = C;
  p.width = W;
  p.seqs.slots = slot_ids.data();
  p.seqs.cu_seqlens = decode ? nullptr : cu.data();
  p.seqs.has_initial_state = decode ? nullptr : init.data();
  p.seqs.batch = B;
  p.seqs.tokens = T;
  p.seqs.num_slots = slots;
  p.seqs.max_seqlen = 0;
  CHECK_MSG(kn::validate_causal_conv1d(p).empty(), kn::validate_causal_conv1d(p));
  const dim3 grid = kn::gdn_conv_impl::causal_conv1d_grid(p);
  if (W == 4) simt::launch(grid, kn::gdn_conv_impl::kThreads, 0, [&] { kn::gdn_conv_impl::causal_conv1d_kernel<4>(p); });
  if (W == 3) simt::launch(grid, kn::gdn_conv_impl::kThreads, 0, [&] { kn::gdn_conv_impl::causal_conv1d_kernel<3>(p); });
  const double e = rel_error(y, y_ref);
  const std::string where = "emulated conv C " + std::to_string(C) + " W " + std::to_string(W) + (decode ? " decode" : " prefill");
  std::printf("%s: y rel error %.2e\n", where.c_str(), e);
  CHECK_MSG(e < 2e-3, where + ": y rel error " + std::to_string(e));
  CHECK_MSG(pool == pool_ref, where + ": conv state pool differs");
}

kn::GatedDeltaNetParams params(const GdnCase& c, std::vector<float>& pool, std::vector<uint16_t>& o) {
  kn::GatedDeltaNetParams p;
  p.q = bf(c.q);
  p.q_stride = c.Hk * c.dk;
  p.k = bf(c.k);
  p.k_stride = c.Hk * c.dk;
  p.v = bf(c.v);
  p.v_stride = c.Hv * c.dv;
  p.a = bf(c.a);
  p.a_stride = c.Hv;
  p.b = bf(c.b);
  p.b_stride = c.Hv;
  p.A_log = c.A_log.data();
  p.dt_bias = c.dt_bias.data();
  p.state_pool = pool.data();
  p.o = bf(o);
  p.o_stride = c.Hv * c.dv;
  p.num_k_heads = c.Hk;
  p.num_v_heads = c.Hv;
  p.head_k_dim = c.dk;
  p.head_v_dim = c.dv;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
  p.seqs.slots = c.slot_ids.data();
  p.seqs.cu_seqlens = c.decode ? nullptr : c.cu.data();
  p.seqs.has_initial_state = c.decode ? nullptr : c.init.data();
  p.seqs.batch = static_cast<int64_t>(c.lens.size());
  p.seqs.tokens = c.T();
  p.seqs.num_slots = c.slots;
  return p;
}

std::string where_of(const GdnCase& c, const char* kernel) {
  std::string s = std::string("emulated ") + kernel + " Hk " + std::to_string(c.Hk) + " Hv " + std::to_string(c.Hv) +
                  " dk " + std::to_string(c.dk) + " dv " + std::to_string(c.dv) + " lens";
  for (int n : c.lens) {
    s += ' ';
    s += std::to_string(n);
  }
  return s;
}

// q, k, v as column slices of one [T, 2 Hk dk + Hv dv] buffer (the conv output), as the model passes them.
void use_fused_qkv(const GdnCase& c, std::vector<uint16_t>& qkv, kn::GatedDeltaNetParams& p) {
  const std::size_t qk = static_cast<std::size_t>(c.Hk) * c.dk, vw = static_cast<std::size_t>(c.Hv) * c.dv;
  const std::size_t row = 2 * qk + vw;
  qkv.assign(static_cast<std::size_t>(c.T()) * row, 0xFFFF);
  for (int t = 0; t < c.T(); ++t) {
    std::copy_n(c.q.begin() + t * qk, qk, qkv.begin() + t * row);
    std::copy_n(c.k.begin() + t * qk, qk, qkv.begin() + t * row + qk);
    std::copy_n(c.v.begin() + t * vw, vw, qkv.begin() + t * row + 2 * qk);
  }
  p.q = bf(qkv);
  p.k = bf(qkv) + qk;
  p.v = bf(qkv) + 2 * qk;
  p.q_stride = p.k_stride = p.v_stride = static_cast<int64_t>(row);
}

template <int DK>
void check_recurrent(int Hk, int Hv, int dv, const std::vector<int>& lens, bool decode, bool fused = false) {
  const GdnCase c = make_gdn_case(gen, Hk, Hv, DK, dv, lens, decode);
  std::vector<uint16_t> o_ref, o(static_cast<std::size_t>(c.T()) * Hv * dv, 0xFFFF), qkv;
  std::vector<float> pool_ref, pool = c.pool;
  gdn_reference(c, o_ref, pool_ref);
  kn::GatedDeltaNetParams p = params(c, pool, o);
  if (fused) use_fused_qkv(c, qkv, p);
  CHECK_MSG(kn::validate_gdn_recurrent(p).empty(), kn::validate_gdn_recurrent(p));
  simt::launch(kn::gdn_recurrent_impl::gdn_recurrent_grid(p), kn::gdn_recurrent_impl::kThreads, 0,
               [&] { kn::gdn_recurrent_impl::gdn_recurrent_kernel<DK>(p); });
  const double eo = rel_error(o, o_ref), es = rel_error(pool, pool_ref);
  const std::string where = where_of(c, decode ? "recurrent decode" : "recurrent varlen");
  std::printf("%s: o rel error %.2e, state rel error %.2e\n", where.c_str(), eo, es);
  CHECK_MSG(eo < 2e-3, where + ": o rel error " + std::to_string(eo));
  CHECK_MSG(es < 1e-4, where + ": state rel error " + std::to_string(es));
}

// Runs plan, transform and state pass; returns the device error word.
template <int DK>
int32_t run_chunked(const kn::GatedDeltaNetParams& p) {
  namespace ci = kn::gdn_chunk_impl;
  const std::size_t bytes =
      kn::gdn_chunk_prefill_workspace_bytes(p.seqs.batch, p.seqs.tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim);
  std::vector<unsigned char> ws_mem(bytes + 256, 0xFF);
  void* base = ws_mem.data() + (256 - reinterpret_cast<uintptr_t>(ws_mem.data()) % 256) % 256;
  const ci::Workspace ws = ci::workspace_of(
      base, ci::workspace_layout(p.seqs.batch, p.seqs.tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim));
  CHECK_MSG(kn::validate_gdn_chunk_prefill(p, bytes).empty(), kn::validate_gdn_chunk_prefill(p, bytes));
  simt::launch(dim3(1), ci::kPlanThreads, 0, [&] { ci::gdn_plan_kernel(p.seqs, ws); });
  simt::launch(ci::transform_grid(p, ws), ci::kThreads, ci::TransformSmem<DK>::kBytes,
               [&] { ci::gdn_chunk_transform_kernel<DK>(p, ws); });
  simt::launch(ci::state_grid(p), ci::kThreads, ci::StateSmem<DK>::kBytes, [&] { ci::gdn_chunk_state_kernel<DK>(p, ws); });
  simt::launch(ci::output_grid(p, ws), ci::kThreads, ci::OutputSmem<DK>::kBytes,
               [&] { ci::gdn_chunk_output_kernel<DK>(p, ws); });
  return *ws.error;
}

template <int DK>
void check_chunked(int Hk, int Hv, int dv, const std::vector<int>& lens, bool fused = false) {
  const GdnCase c = make_gdn_case(gen, Hk, Hv, DK, dv, lens, false);
  std::vector<uint16_t> o_ref, o(static_cast<std::size_t>(c.T()) * Hv * dv, 0xFFFF), qkv;
  std::vector<float> pool_ref, pool = c.pool;
  gdn_reference(c, o_ref, pool_ref);
  kn::GatedDeltaNetParams p = params(c, pool, o);
  if (fused) use_fused_qkv(c, qkv, p);
  CHECK(run_chunked<DK>(p) == 0);
  const std::string where = where_of(c, fused ? "chunked prefill (fused qkv rows)" : "chunked prefill");
  const double eo = rel_error(o, o_ref), es = rel_error(pool, pool_ref);
  std::printf("%s: o rel error %.2e, state rel error %.2e\n", where.c_str(), eo, es);
  CHECK_MSG(eo < 1e-2, where + ": o rel error " + std::to_string(eo));
  CHECK_MSG(es < 1e-2, where + ": state rel error " + std::to_string(es));
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const std::size_t lo = static_cast<std::size_t>(c.cu[i]) * Hv * dv, hi = static_cast<std::size_t>(c.cu[i + 1]) * Hv * dv;
    const double e = rel_error(std::vector<uint16_t>(o.begin() + lo, o.begin() + hi),
                               std::vector<uint16_t>(o_ref.begin() + lo, o_ref.begin() + hi));
    CHECK_MSG(e < 1e-2, where + ": sequence " + std::to_string(i) + " (length " + std::to_string(lens[i]) +
                            ") o rel error " + std::to_string(e));
  }
  const std::size_t per = static_cast<std::size_t>(Hv) * DK * dv;
  for (int s = 0; s < c.slots; ++s) {
    if (std::find(c.slot_ids.begin(), c.slot_ids.end(), s) != c.slot_ids.end()) continue;
    CHECK_MSG(std::equal(pool.begin() + s * per, pool.begin() + (s + 1) * per, c.pool.begin() + s * per),
              where + ": slot " + std::to_string(s) + " outside the batch changed");
  }
}

void check_device_errors() {
  for (int which = 0; which < 2; ++which) {
    GdnCase c = make_gdn_case(gen, 1, 2, 64, 32, {3, 5}, false);
    int32_t expected;
    if (which == 0) {
      c.cu = {0, 0, 8};
      expected = kn::kGdnErrorCuSeqlens;
    } else {
      c.slot_ids = {0, 99};
      expected = kn::kGdnErrorSlot;
    }
    std::vector<uint16_t> o(static_cast<std::size_t>(c.T()) * c.Hv * c.dv, 0xFFFF);
    std::vector<float> pool = c.pool;
    const int32_t err = run_chunked<64>(params(c, pool, o));
    CHECK_MSG(err == expected, "emulated device error word " + std::to_string(err));
    CHECK(pool == c.pool);
    CHECK(std::all_of(o.begin(), o.end(), [](uint16_t x) { return x == 0xFFFF; }));
  }
}

// Qwen3.5-35B-A3B's GDN shapes (Hk 16, Hv 32, dk = dv = 128, conv over 8192 channels): the index
// arithmetic, shared-memory layouts and head mapping at the sizes that run, several chunks per
// sequence. Slow under the emulator (one OS thread per CUDA thread): its own ctest.
void check_real_shapes() {
  check_conv(8192, 4, {3, 70}, false);
  check_recurrent<128>(16, 32, 128, {1, 1, 1}, true);
  check_chunked<128>(16, 32, 128, {150, 1});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--real-shapes") {
    check_real_shapes();
    return qwen35_trt::test::report();
  }
  check_conv(64, 4, {1, 2, 65, 130}, false);
  check_conv(24, 3, {1, 1, 1}, true);
  check_recurrent<32>(1, 2, 64, {1, 1, 1}, true);
  check_recurrent<64>(2, 4, 32, {1, 3, 9}, false);
  check_recurrent<128>(1, 1, 32, {1}, true);
  check_recurrent<64>(1, 2, 32, {1, 1}, true, /*fused=*/true);
  check_chunked<64>(1, 2, 32, {1, 63, 64, 65, 130});
  check_chunked<128>(2, 4, 64, {70});
  check_chunked<64>(2, 4, 32, {20, 3}, /*fused=*/true);
  // Warps leaving each barrier one after another, in both orders: a missing barrier in any of the
  // chunked kernels lets the leading warp overwrite or read a shared tile too early.
  for (int skew : {5000, -5000}) {
    simt::barrier_skew_us = skew;
    check_chunked<64>(1, 2, 64, {130, 5});
  }
  simt::barrier_skew_us = 0;
  check_device_errors();
  return qwen35_trt::test::report();
}
