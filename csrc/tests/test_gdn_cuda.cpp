// ctest for the Gated DeltaNet CUDA kernels against the C++ CPU reference (qwen35_trt/gdn.h), on
// random bf16 inputs: the conv (prefill and decode, strided rows), the recurrent kernel (decode
// and varlen) and the chunked prefill (lengths around the chunk size, a long sequence,
// continuation, scrambled slots), the device-side input checks and the launchers' parameter
// checks. Outputs are poisoned (NaN) before each run so unwritten elements fail.
// Thresholds (METHOD.md): the conv and the recurrent kernel compute in fp32 like the reference,
// so their bf16 outputs differ by rounding only (relative error < 2e-3); the chunked prefill
// rounds its tensor-core operands to bf16 (< 1e-2). States are fp32 (recurrent: < 1e-4).
// Exits 77 (ctest SKIP_RETURN_CODE) with "SKIPPED: no CUDA device" when no GPU is usable.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_test_util.h"
#include "gdn_test_cases.h"
#include "qwen35_trt/gdn.h"
#include "qwen35_trt/kernels/gdn.h"
#include "qwen35_trt/nvfp4.h"

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

qwen35_trt::testing::Random gen(4242);

// A device buffer that frees itself.
template <typename T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(std::size_t count) : n(count) { CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(count, 1) * sizeof(T))); }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void upload(const std::vector<T>& h) { CUDA_OK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { CUDA_OK(cudaMemset(p, 0xFF, n * sizeof(T))); }  // NaN for bf16 and fp32
};

std::string lens_str(const std::vector<int>& lens) {
  std::string s;
  for (int n : lens) s += std::to_string(n) + " ";
  return s;
}

// ---------------------------------------------------------------------------------------------
// CausalConv1d

void check_conv(int C, int W, const std::vector<int>& lens, bool decode, int row_pad) {
  const auto cu = cu_of(lens);
  const int B = static_cast<int>(lens.size()), T = cu.back(), slots = B + 3, H = W - 1;
  const int stride = C + row_pad;
  auto x = gen.randn_bf16(static_cast<std::size_t>(T) * stride);
  auto w = gen.randn_bf16(static_cast<std::size_t>(C) * W, 0.5f);
  auto pool = gen.randn_bf16(static_cast<std::size_t>(slots) * C * H);
  auto slot_ids = gen.scrambled_slots(B, slots);
  std::vector<uint8_t> init(B);
  for (int i = 0; i < B; ++i) init[i] = decode ? 1 : static_cast<uint8_t>(i % 3 != 0);

  // Reference on the dense rows.
  std::vector<uint16_t> xd(static_cast<std::size_t>(T) * C), y_ref(xd.size()), pool_ref = pool;
  for (int t = 0; t < T; ++t) std::copy_n(x.begin() + static_cast<std::size_t>(t) * stride, C, xd.begin() + static_cast<std::size_t>(t) * C);
  gdn::CausalConv1dArgs<uint16_t> r;
  r.x = xd;
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

  Dev<uint16_t> dx(x), dw(w), dpool(pool), dy(static_cast<std::size_t>(T) * C);
  Dev<int32_t> dslots(slot_ids), dcu(cu);
  Dev<uint8_t> dinit(init);
  dy.poison();
  kn::CausalConv1dParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(dx.p);
  p.x_stride = stride;
  p.weight = reinterpret_cast<const __nv_bfloat16*>(dw.p);
  p.state_pool = reinterpret_cast<__nv_bfloat16*>(dpool.p);
  p.y = reinterpret_cast<__nv_bfloat16*>(dy.p);
  p.y_stride = C;
  p.channels = C;
  p.width = W;
  p.seqs.slots = dslots.p;
  p.seqs.cu_seqlens = decode ? nullptr : dcu.p;
  p.seqs.has_initial_state = decode ? nullptr : dinit.p;
  p.seqs.batch = B;
  p.seqs.tokens = T;
  p.seqs.num_slots = slots;
  p.seqs.max_seqlen = decode ? 1 : *std::max_element(lens.begin(), lens.end());
  CHECK_MSG(kn::validate_causal_conv1d(p).empty(), kn::validate_causal_conv1d(p));
  CUDA_OK(kn::causal_conv1d(p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const auto y = dy.download(), pool_out = dpool.download();
  std::size_t flips = 0;
  for (std::size_t i = 0; i < y.size(); ++i) flips += y[i] != y_ref[i];
  const std::string where = "conv C " + std::to_string(C) + " W " + std::to_string(W) + " lens " + lens_str(lens) +
                            (decode ? "decode" : "prefill") + " pad " + std::to_string(row_pad);
  const double e = rel_error(y, y_ref);
  std::printf("%s: y rel error %.2e, %zu of %zu differ\n", where.c_str(), e, flips, y.size());
  CHECK_MSG(e < 2e-3, where + ": y rel error " + std::to_string(e));
  CHECK_MSG(flips <= y.size() / 100, where + ": " + std::to_string(flips) + " outputs differ from the reference");
  CHECK_MSG(pool_out == pool_ref, where + ": conv state pool differs from the reference");

  // max_seqlen = 0 (unknown) gives the same result.
  if (!decode) {
    dpool.upload(pool);
    dy.poison();
    p.seqs.max_seqlen = 0;
    CUDA_OK(kn::causal_conv1d(p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    CHECK_MSG(dy.download() == y && dpool.download() == pool_out, where + ": max_seqlen 0 changes the result");
  }
}

// ---------------------------------------------------------------------------------------------
// GatedDeltaNet

// Device copies of a case and the params pointing at them.
struct DevCase {
  Dev<uint16_t> q, k, v, a, b, o;
  Dev<float> A_log, dt_bias, pool;
  Dev<int32_t> slots, cu;
  Dev<uint8_t> init;
  kn::GatedDeltaNetParams p;
  explicit DevCase(const GdnCase& c)
      : q(c.q), k(c.k), v(c.v), a(c.a), b(c.b), o(static_cast<std::size_t>(c.T()) * c.Hv * c.dv), A_log(c.A_log),
        dt_bias(c.dt_bias), pool(c.pool), slots(c.slot_ids), cu(c.cu), init(c.init) {
    o.poison();
    auto bf = [](uint16_t* x) { return reinterpret_cast<const __nv_bfloat16*>(x); };
    p.q = bf(q.p);
    p.q_stride = c.Hk * c.dk;
    p.k = bf(k.p);
    p.k_stride = c.Hk * c.dk;
    p.v = bf(v.p);
    p.v_stride = c.Hv * c.dv;
    p.a = bf(a.p);
    p.a_stride = c.Hv;
    p.b = bf(b.p);
    p.b_stride = c.Hv;
    p.A_log = A_log.p;
    p.dt_bias = dt_bias.p;
    p.state_pool = pool.p;
    p.o = reinterpret_cast<__nv_bfloat16*>(o.p);
    p.o_stride = c.Hv * c.dv;
    p.num_k_heads = c.Hk;
    p.num_v_heads = c.Hv;
    p.head_k_dim = c.dk;
    p.head_v_dim = c.dv;
    p.scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
    p.seqs.slots = slots.p;
    p.seqs.cu_seqlens = c.decode ? nullptr : cu.p;
    p.seqs.has_initial_state = c.decode ? nullptr : init.p;
    p.seqs.batch = static_cast<int64_t>(c.lens.size());
    p.seqs.tokens = c.T();
    p.seqs.num_slots = c.slots;
    p.seqs.max_seqlen = *std::max_element(c.lens.begin(), c.lens.end());
  }
};

std::string case_str(const GdnCase& c, const char* kernel) {
  return std::string(kernel) + " Hk " + std::to_string(c.Hk) + " Hv " + std::to_string(c.Hv) + " dk " +
         std::to_string(c.dk) + " dv " + std::to_string(c.dv) + " lens " + lens_str(c.lens);
}

void check_recurrent(int Hk, int Hv, int dk, int dv, const std::vector<int>& lens, bool decode) {
  const GdnCase c = make_gdn_case(gen, Hk, Hv, dk, dv, lens, decode);
  std::vector<uint16_t> o_ref;
  std::vector<float> pool_ref;
  gdn_reference(c, o_ref, pool_ref);
  DevCase d(c);
  CHECK_MSG(kn::validate_gdn_recurrent(d.p).empty(), kn::validate_gdn_recurrent(d.p));
  CUDA_OK(kn::gdn_recurrent(d.p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  const std::string where = case_str(c, decode ? "recurrent decode" : "recurrent varlen");
  const double eo = rel_error(d.o.download(), o_ref), es = rel_error(d.pool.download(), pool_ref);
  std::printf("%s: o rel error %.2e, state rel error %.2e\n", where.c_str(), eo, es);
  CHECK_MSG(eo < 2e-3, where + ": o rel error " + std::to_string(eo));
  CHECK_MSG(es < 1e-4, where + ": state rel error " + std::to_string(es));
}

void check_chunked(int Hk, int Hv, int dk, int dv, const std::vector<int>& lens) {
  const GdnCase c = make_gdn_case(gen, Hk, Hv, dk, dv, lens, false);
  std::vector<uint16_t> o_ref;
  std::vector<float> pool_ref;
  gdn_reference(c, o_ref, pool_ref);
  DevCase d(c);
  const std::size_t ws_bytes = kn::gdn_chunk_prefill_workspace_bytes(d.p.seqs.batch, d.p.seqs.tokens, Hv, dk, dv);
  Dev<unsigned char> ws(ws_bytes);
  CHECK_MSG(kn::validate_gdn_chunk_prefill(d.p, ws_bytes).empty(), kn::validate_gdn_chunk_prefill(d.p, ws_bytes));
  CUDA_OK(kn::gdn_chunk_prefill(d.p, ws.p, ws_bytes, nullptr));
  int32_t err = -1;
  CUDA_OK(kn::gdn_prefill_read_error(ws.p, &err, nullptr));
  CHECK(err == 0);
  const std::string where = case_str(c, "chunked prefill");
  const auto o = d.o.download();
  const auto pool = d.pool.download();
  const double eo = rel_error(o, o_ref), es = rel_error(pool, pool_ref);
  std::printf("%s: o rel error %.2e, state rel error %.2e\n", where.c_str(), eo, es);
  CHECK_MSG(eo < 1e-2, where + ": o rel error " + std::to_string(eo));
  CHECK_MSG(es < 1e-2, where + ": state rel error " + std::to_string(es));
  // Per sequence too, so that a wrong short sequence cannot hide behind a long one.
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const std::size_t lo = static_cast<std::size_t>(c.cu[i]) * Hv * dv, hi = static_cast<std::size_t>(c.cu[i + 1]) * Hv * dv;
    const double e = rel_error(std::vector<uint16_t>(o.begin() + lo, o.begin() + hi),
                               std::vector<uint16_t>(o_ref.begin() + lo, o_ref.begin() + hi));
    CHECK_MSG(e < 1e-2, where + ": sequence " + std::to_string(i) + " o rel error " + std::to_string(e));
  }
  // Slots not in the batch are untouched.
  const std::size_t per = static_cast<std::size_t>(Hv) * dk * dv;
  for (int s = 0; s < c.slots; ++s) {
    if (std::find(c.slot_ids.begin(), c.slot_ids.end(), s) != c.slot_ids.end()) continue;
    CHECK_MSG(std::equal(pool.begin() + s * per, pool.begin() + (s + 1) * per, c.pool.begin() + s * per),
              where + ": slot " + std::to_string(s) + " outside the batch changed");
  }
}

// prefill(A) then prefill(B) then decodes on the device == the reference on all tokens.
void check_continuation(int dk, int dv) {
  const int Hk = 2, Hv = 4, n1 = 100, n2 = 70, nd = 4, T = n1 + n2 + nd;
  GdnCase all = make_gdn_case(gen, Hk, Hv, dk, dv, {T}, false);
  all.init = {0};
  std::vector<uint16_t> o_ref;
  std::vector<float> pool_ref;
  gdn_reference(all, o_ref, pool_ref);
  auto piece = [&](int t0, int n, bool decode, bool has_init) {
    GdnCase c = all;
    c.lens = {n};
    c.cu = {0, n};
    c.decode = decode;
    c.init = {static_cast<uint8_t>(has_init)};
    auto cut = [&](const std::vector<uint16_t>& x, std::size_t per) {
      return std::vector<uint16_t>(x.begin() + t0 * per, x.begin() + (t0 + n) * per);
    };
    c.q = cut(all.q, Hk * dk);
    c.k = cut(all.k, Hk * dk);
    c.v = cut(all.v, static_cast<std::size_t>(Hv) * dv);
    c.a = cut(all.a, Hv);
    c.b = cut(all.b, Hv);
    return c;
  };
  std::vector<float> pool = all.pool;
  std::vector<uint16_t> o;
  int t = 0;
  for (int n : {n1, n2}) {
    GdnCase c = piece(t, n, false, t > 0);
    c.pool = pool;
    DevCase d(c);
    const std::size_t ws_bytes = kn::gdn_chunk_prefill_workspace_bytes(1, n, Hv, dk, dv);
    Dev<unsigned char> ws(ws_bytes);
    CUDA_OK(kn::gdn_chunk_prefill(d.p, ws.p, ws_bytes, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const auto od = d.o.download();
    o.insert(o.end(), od.begin(), od.end());
    pool = d.pool.download();
    t += n;
  }
  for (; t < T; ++t) {
    GdnCase c = piece(t, 1, true, true);
    c.pool = pool;
    DevCase d(c);
    CUDA_OK(kn::gdn_recurrent(d.p, nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    const auto od = d.o.download();
    o.insert(o.end(), od.begin(), od.end());
    pool = d.pool.download();
  }
  const double eo = rel_error(o, o_ref), es = rel_error(pool, pool_ref);
  std::printf("continuation dk %d dv %d: o rel error %.2e, state rel error %.2e\n", dk, dv, eo, es);
  CHECK_MSG(eo < 1e-2, "continuation o rel error " + std::to_string(eo));
  CHECK_MSG(es < 1e-2, "continuation state rel error " + std::to_string(es));
}

// Invalid cu_seqlens / slots that only the device sees: the chunked prefill flags them and writes nothing.
void check_device_errors() {
  GdnCase c = make_gdn_case(gen, 1, 2, 64, 32, {3, 5}, false);
  for (int which = 0; which < 2; ++which) {
    GdnCase bad = c;
    int32_t expected = 0;
    if (which == 0) {
      bad.cu = {0, 0, 8};  // a zero-length sequence
      expected = kn::kGdnErrorCuSeqlens;
    } else {
      bad.slot_ids = {0, 99};
      expected = kn::kGdnErrorSlot;
    }
    DevCase d(bad);
    const std::size_t ws_bytes = kn::gdn_chunk_prefill_workspace_bytes(2, 8, 2, 64, 32);
    Dev<unsigned char> ws(ws_bytes);
    CUDA_OK(kn::gdn_chunk_prefill(d.p, ws.p, ws_bytes, nullptr));
    int32_t err = 0;
    CUDA_OK(kn::gdn_prefill_read_error(ws.p, &err, nullptr));
    CHECK_MSG(err == expected, "device error word " + std::to_string(err) + ", expected " + std::to_string(expected));
    CHECK(!kn::gdn_prefill_error_message(err).empty());
    CHECK_MSG(d.pool.download() == bad.pool, "pool written despite invalid inputs");
    const auto o = d.o.download();
    CHECK_MSG(std::all_of(o.begin(), o.end(), [](uint16_t x) { return x == 0xFFFF; }), "o written despite invalid inputs");
  }
}

void check_launcher_validation() {
  GdnCase c = make_gdn_case(gen, 2, 4, 64, 32, {4}, false);
  DevCase d(c);
  Dev<unsigned char> ws(kn::gdn_chunk_prefill_workspace_bytes(1, 4, 4, 64, 32));
  auto refused = [&](kn::GatedDeltaNetParams p, const char* field, std::size_t ws_bytes) {
    const std::string m = kn::validate_gdn_chunk_prefill(p, ws_bytes);
    CHECK_MSG(m.rfind(field, 0) == 0, std::string("expected a message about ") + field + ", got '" + m + "'");
    CHECK(kn::gdn_chunk_prefill(p, ws.p, ws_bytes, nullptr) == cudaErrorInvalidValue);
  };
  const std::size_t n = ws.n;
  auto p = d.p;
  p.head_k_dim = 32;
  refused(p, "head_k_dim", n);
  p = d.p;
  p.head_v_dim = 48;
  refused(p, "head_v_dim", n);
  p = d.p;
  p.num_k_heads = 3;
  refused(p, "num_v_heads", n);
  p = d.p;
  p.q_stride = 130;
  refused(p, "q_stride", n);
  p = d.p;
  p.v = reinterpret_cast<const __nv_bfloat16*>(reinterpret_cast<const char*>(p.v) + 2);
  refused(p, "v:", n);
  p = d.p;
  refused(p, "workspace_bytes", n - 1);
  p = d.p;
  p.seqs.cu_seqlens = nullptr;
  refused(p, "seqs.", n);
  p = d.p;
  p.seqs.batch = 0;
  refused(p, "seqs.batch", n);
  p = d.p;
  p.scale = NAN;
  refused(p, "scale", n);
  CHECK(kn::gdn_prefill_error_message(0).empty());

  kn::CausalConv1dParams cp;
  cp.channels = 12;
  cp.width = 4;
  CHECK(kn::validate_causal_conv1d(cp).rfind("channels", 0) == 0);
  CHECK(kn::causal_conv1d(cp, nullptr) == cudaErrorInvalidValue);
  cp.channels = 16;
  cp.width = 9;
  CHECK(kn::validate_causal_conv1d(cp).rfind("width", 0) == 0);
  p = d.p;
  p.head_k_dim = 48;
  CHECK(kn::validate_gdn_recurrent(p).rfind("head_k_dim", 0) == 0);
  CHECK(kn::gdn_recurrent(p, nullptr) == cudaErrorInvalidValue);
}

}  // namespace

int main() {
  if (!qwen35_trt::testing::have_cuda_device()) return qwen35_trt::testing::kSkip;

  // GDN_CUDA_TEST_QUICK=1: a few small cases, for compute-sanitizer runs (bench/device_check.sh).
  const char* quick_env = std::getenv("GDN_CUDA_TEST_QUICK");
  if (quick_env != nullptr && quick_env[0] == '1') {
    check_conv(64, 4, {1, 2, 65}, false, 8);
    check_conv(64, 3, {1, 1}, true, 0);
    check_recurrent(2, 4, 128, 64, {1, 1}, true);
    check_recurrent(1, 2, 64, 32, {1, 5, 70}, false);
    check_chunked(2, 4, 128, 64, {1, 65, 130});
    check_chunked(1, 2, 64, 32, {64, 3});
    check_device_errors();
    return qwen35_trt::test::report();
  }
  const std::vector<int> varlen = {1, 2, 63, 64, 65, 127, 1000};
  check_conv(64, 4, varlen, false, 0);
  check_conv(8192, 4, {1, 70, 3}, false, 8);  // 35B channels, strided rows
  check_conv(24, 2, {5, 1, 9}, false, 0);
  check_conv(16, 8, {2, 130}, false, 0);
  check_conv(64, 4, {1, 1, 1, 1, 1}, true, 16);

  check_recurrent(2, 4, 128, 128, {1, 1, 1, 1, 1, 1}, true);
  check_recurrent(16, 32, 128, 128, {1, 1, 1}, true);  // 35B heads
  check_recurrent(1, 3, 32, 64, {1, 1}, true);
  check_recurrent(2, 2, 64, 32, {1}, true);
  check_recurrent(1, 2, 256, 32, {1, 1}, true);
  check_recurrent(2, 4, 64, 64, {1, 5, 70}, false);

  check_chunked(2, 4, 128, 128, varlen);
  check_chunked(1, 2, 64, 64, varlen);
  check_chunked(3, 3, 64, 32, {200, 17});
  check_chunked(16, 32, 128, 128, {65, 130});  // 35B heads
  check_continuation(128, 128);
  check_continuation(64, 32);
  check_device_errors();
  check_launcher_validation();
  return qwen35_trt::test::report();
}
