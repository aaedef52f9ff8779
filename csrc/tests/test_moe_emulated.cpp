// ctest that runs the Nvfp4MoE kernel *sources* (csrc/kernels/moe/w4a16_gemm_kernel.cuh and
// routing_kernels.cuh) on the CPU through simt_emulator.h: routing against moe::route, scatter,
// combine, and the W4A16 GEMM against a direct computation from the NVFP4 codec: tile loop (dense
// and grouped, persistent CTAs), shared-memory layouts, both weight chunk sizes, the three weight
// layouts (row-major and swizzled FP8 scales, the fragment layout with its partial last group)
// and scale load paths, partial row / column / K tiles, the fragment conversions, the MMA fragment
// mapping, SwiGLU and the epilogue. Every build checks them, GPU or not. Not covered here: the
// real cp.async / ldmatrix instructions (test_moe_cuda on a GPU).
#include "simt_emulator.h"  // first: it redefines the CUDA built-ins for the kernel sources

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

// Warp and atomic built-ins the routing kernels use, on top of simt_emulator.h's.
inline float __shfl_sync(unsigned /*mask*/, float v, int src_lane) {
  simt::Warp& w = simt::warp();
  const unsigned lane = simt::thread_idx.x % 32;
  w.fx[lane] = v;
  w.bar.arrive_and_wait();
  const float r = w.fx[static_cast<unsigned>(src_lane) % 32];
  w.bar.arrive_and_wait();
  return r;
}
inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
  float f, r;
  std::memcpy(&f, &v, 4);
  r = __shfl_xor_sync(mask, f, lane_mask);
  int out;
  std::memcpy(&out, &r, 4);
  return out;
}
inline int atomicAdd(int* address, int value) {
  std::lock_guard<std::mutex> lock(simt::block->atomics);
  const int old = *address;
  *address = old + value;
  return old;
}
inline float __fdiv_rn(float a, float b) { return a / b; }

#include "check.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/common/w4a16_fragments.h"
#include "qwen35_trt/nvfp4.h"
#include "routing_kernels.cuh"
#include "w4a16_gemm_kernel.cuh"

namespace fp4 = qwen35_trt::nvfp4;
namespace mo = qwen35_trt::moe;
namespace kn = qwen35_trt::kernels;
namespace md = qwen35_trt::kernels::moe_detail;
namespace w4 = qwen35_trt::kernels::moe_detail::w4a16;
namespace rt = qwen35_trt::kernels::moe_detail::routing;

namespace {

std::mt19937 rng(99);

// `count` NVFP4 matrices [rows, cols] in `layout` (packed, scales) and in ModelOpt's order (codes,
// plain: what the expected values are computed from).
struct Weights {
  std::size_t count, rows, cols;
  mo::ScaleLayout layout;
  std::vector<uint8_t> packed, scales, codes, plain;
};

Weights random_weights(std::size_t count, std::size_t rows, std::size_t cols, mo::ScaleLayout layout) {
  const bool frag = layout == mo::ScaleLayout::kW4A16Fragments;
  Weights w{count, rows, cols, layout, {}, {}, std::vector<uint8_t>(count * rows * cols / 2),
            std::vector<uint8_t>(count * rows * cols / 16)};
  for (auto& b : w.codes) b = static_cast<uint8_t>(rng());
  // The fragment layout's scales also cover E4M3 subnormals and zero (its UE5M3 conversion).
  std::uniform_int_distribution<int> e(frag ? 0 : 4, 10), m(0, 7);
  for (auto& s : w.plain) s = static_cast<uint8_t>((e(rng) << 3) | m(rng));
  const std::size_t blocks = cols / 16, per = mo::scale_bytes(layout, rows, cols);
  w.scales.assign(count * per, 0);
  if (frag) {
    w.packed.resize(w.codes.size());
    std::size_t refused = 0;
    for (std::size_t r = 0; r < count * rows; ++r) {
      refused += !fp4::pack_fragment_row(&w.codes[r * cols / 2], &w.plain[r * blocks], cols,
                                         &w.packed[r * cols / 2], &w.scales[r * blocks], nullptr);
    }
    CHECK_MSG(refused == 0, "pack_fragment_row refused the valid scales of " + std::to_string(refused) + " rows");
    return w;
  }
  w.packed = w.codes;
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t b = 0; b < blocks; ++b)
        w.scales[i * per + mo::scale_offset(layout, r, b, blocks)] = w.plain[(i * rows + r) * blocks + b];
  return w;
}

const char* layout_name(mo::ScaleLayout layout) {
  switch (layout) {
    case mo::ScaleLayout::kRowMajor: return "";
    case mo::ScaleLayout::kSwizzled128x4: return " swizzled";
    case mo::ScaleLayout::kW4A16Fragments: return " fragments";
  }
  return " ?";
}

// Wq[index][row][col] (no global).
double wq(const Weights& w, std::size_t index, std::size_t row, std::size_t col) {
  const uint8_t byte = w.codes[(index * w.rows + row) * (w.cols / 2) + col / 2];
  return fp4::decode_e2m1(static_cast<uint8_t>(col % 2 ? byte >> 4 : byte & 0xF)) *
         fp4::decode_e4m3(w.plain[(index * w.rows + row) * (w.cols / 16) + col / 16]);
}

kn::Nvfp4DeviceWeights view(const Weights& w, const float* global, int32_t global_stride, int32_t row_offset) {
  kn::Nvfp4DeviceWeights d;
  d.packed = w.packed.data();
  d.scales = w.scales.data();
  d.global_scale = global;
  d.packed_stride = static_cast<int64_t>(w.rows * w.cols / 2);
  d.scale_stride = static_cast<int64_t>(mo::scale_bytes(w.layout, w.rows, w.cols));
  d.global_stride = global_stride;
  d.row_offset = row_offset;
  d.layout = w.layout;
  return d;
}

std::vector<uint16_t> random_bf16(std::size_t n) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = fp4::float_to_bf16(d(rng));
  return v;
}

double bf16(uint16_t b) { return fp4::bf16_to_float(b); }

template <class C, bool kSwiGLU>
void run(const md::W4A16GemmArgs& g, unsigned grid) {
  w4::KernelArgs ka{g, {}};
  if (!w4::make_plan(g, ka.plan)) {
    CHECK_MSG(false, "make_plan refused valid arguments");
    return;
  }
  ka.plan.n_tiles = w4::n_tiles<C>(g);
  simt::launch(dim3(grid), C::kThreads, w4::smem_bytes<C, kSwiGLU>(ka.plan),
               [&] { w4::gemm_body<C, kSwiGLU>(ka, simt::dynamic_smem()); });
}

// Within one bf16 rounding of `want` plus fp32 summation slack relative to the sums' magnitudes.
bool close(double got, double want, double mag) {
  return std::isfinite(got) && std::fabs(got - want) <= std::fabs(want) * 0.0079 + mag * 1e-5 + 1e-30;
}

template <class C>
void test_dense(int64_t M, int32_t N, int32_t K, mo::ScaleLayout layout, unsigned grid) {
  const Weights w = random_weights(1, N, K, layout);
  const auto x = random_bf16(static_cast<std::size_t>(M) * K);
  const float s2 = 0.0173f;
  std::vector<uint16_t> out(static_cast<std::size_t>(M) * N, 0xFFFF);  // NaN poison
  md::W4A16GemmArgs g;
  g.a = reinterpret_cast<const __nv_bfloat16*>(x.data());
  g.lda = K;
  g.b0 = view(w, &s2, 0, 0);
  g.b0.packed_stride = g.b0.scale_stride = 0;
  g.out = reinterpret_cast<__nv_bfloat16*>(out.data());
  g.ldo = N;
  g.n = N;
  g.k = K;
  g.rows = M;
  g.bm = C::BM;
  run<C, false>(g, grid);
  std::size_t bad = 0;
  for (int64_t m = 0; m < M; ++m) {
    for (int32_t n = 0; n < N; ++n) {
      double want = 0, mag = 0;
      for (int32_t k = 0; k < K; ++k) {
        const double p = bf16(x[m * K + k]) * wq(w, 0, n, k);
        want += p;
        mag += std::fabs(p);
      }
      bad += !close(bf16(out[m * N + n]), s2 * want, s2 * mag);
    }
  }
  CHECK_MSG(bad == 0, "dense BM=" + std::to_string(C::BM) + " M=" + std::to_string(M) + " N=" +
                          std::to_string(N) + " K=" + std::to_string(K) +
                          layout_name(layout) + ": " +
                          std::to_string(bad) + " wrong outputs");
}

// Grouped: expert e owns permuted rows [offsets[e], offsets[e + 1]); row p reads token perm[p].
// SwiGLU: gate/up are rows [0, I) / [I, 2I) of each expert's fused [2I, H] matrix; plain: the
// weight is [N, K] per expert.
template <class C, bool kSwiGLU>
void test_grouped(const std::vector<int32_t>& counts, int32_t N, int32_t K, mo::ScaleLayout layout,
                  unsigned grid) {
  const int32_t E = static_cast<int32_t>(counts.size());
  std::vector<int32_t> offsets(E + 1, 0);
  for (int32_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  const int32_t rows = offsets[E];
  const int32_t tokens = std::max(1, rows / 2);
  std::vector<int32_t> perm(rows);
  for (auto& p : perm) p = static_cast<int32_t>(rng() % tokens);
  std::vector<int32_t> tile_group, tile_row0;
  for (int32_t e = 0; e < E; ++e) {
    for (int32_t r = offsets[e]; r < offsets[e + 1]; r += C::BM) {
      tile_group.push_back(e);
      tile_row0.push_back(r);
    }
  }
  const int32_t num_tiles = static_cast<int32_t>(tile_group.size());
  const Weights w = random_weights(E, (kSwiGLU ? 2 : 1) * N, K, layout);
  std::vector<float> s2((kSwiGLU ? 2 : 1) * E);
  for (auto& v : s2) v = 0.005f + 0.01f * static_cast<float>(rng() % 100) / 100.0f;
  const auto x = random_bf16(static_cast<std::size_t>(tokens) * K);
  std::vector<uint16_t> out(static_cast<std::size_t>(rows) * N, 0xFFFF);
  md::W4A16GemmArgs g;
  g.a = reinterpret_cast<const __nv_bfloat16*>(x.data());
  g.lda = K;
  g.a_rows = perm.data();
  g.b0 = view(w, s2.data(), kSwiGLU ? 2 : 1, 0);
  if (kSwiGLU) g.b1 = view(w, s2.data() + 1, 2, N);
  g.out = reinterpret_cast<__nv_bfloat16*>(out.data());
  g.ldo = N;
  g.n = N;
  g.k = K;
  g.tiles = {offsets.data(), tile_group.data(), tile_row0.data(), &num_tiles, num_tiles};
  g.swiglu = kSwiGLU;
  g.bm = C::BM;
  run<C, kSwiGLU>(g, grid);
  std::size_t bad = 0;
  for (int32_t e = 0; e < E; ++e) {
    for (int32_t p = offsets[e]; p < offsets[e + 1]; ++p) {
      const uint16_t* xr = x.data() + static_cast<std::size_t>(perm[p]) * K;
      for (int32_t n = 0; n < N; ++n) {
        double a = 0, b = 0, ma = 0, mb = 0;
        for (int32_t k = 0; k < K; ++k) {
          const double pa = bf16(xr[k]) * wq(w, e, n, k);
          a += pa;
          ma += std::fabs(pa);
          if (kSwiGLU) {
            const double pb = bf16(xr[k]) * wq(w, e, N + n, k);
            b += pb;
            mb += std::fabs(pb);
          }
        }
        const double got = bf16(out[static_cast<std::size_t>(p) * N + n]);
        if (kSwiGLU) {
          const double gv = s2[2 * e] * a, uv = s2[2 * e + 1] * b;
          const double want = gv / (1.0 + std::exp(-gv)) * uv;
          const double mag = (s2[2 * e] * ma) * std::fabs(uv) + std::fabs(gv) * s2[2 * e + 1] * mb;
          bad += !close(got, want, mag);
        } else {
          bad += !close(got, s2[e] * a, s2[e] * ma);
        }
      }
    }
  }
  std::string cs;
  for (auto c : counts) cs += std::to_string(c) + ",";
  CHECK_MSG(bad == 0, std::string(kSwiGLU ? "grouped swiglu" : "grouped plain") + " BM=" +
                          std::to_string(C::BM) + " counts=" + cs + " N=" + std::to_string(N) + " K=" +
                          std::to_string(K) + layout_name(layout) +
                          ": " + std::to_string(bad) + " wrong outputs");
}

// Routing kernel vs moe::route (same float operations in the same order: equal), histogram and
// the scatter's permutation.
void test_route(int32_t T, int32_t E, int32_t k, bool bf16_logits) {
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> logits(static_cast<std::size_t>(T) * E);
  for (auto& v : logits) v = d(rng);
  std::vector<uint16_t> bits(logits.size());
  if (bf16_logits) {  // bf16 logits tie often; the rule is the lower index
    for (std::size_t i = 0; i < logits.size(); ++i) {
      bits[i] = fp4::float_to_bf16(logits[i]);
      logits[i] = fp4::bf16_to_float(bits[i]);
    }
  }
  std::vector<int32_t> ids(static_cast<std::size_t>(T) * k, -1), counts(E, 0);
  std::vector<float> w(ids.size(), -1.0f);
  const void* src = bf16_logits ? static_cast<const void*>(bits.data()) : logits.data();
  simt::launch(dim3((T + rt::kRouteWarps - 1) / rt::kRouteWarps), rt::kRouteWarps * 32, 0,
               [&] { rt::route_kernel(src, bf16_logits, T, E, k, ids.data(), w.data(), counts.data()); });
  std::vector<int32_t> want_ids(ids.size());
  std::vector<float> want_w(ids.size());
  mo::route(logits, T, E, k, want_ids, want_w);
  const std::string what = "route T=" + std::to_string(T) + " E=" + std::to_string(E) + " k=" +
                           std::to_string(k) + (bf16_logits ? " bf16" : " fp32");
  CHECK_MSG(ids == want_ids, what + ": ids differ");
  CHECK_MSG(w == want_w, what + ": weights differ");
  std::vector<int32_t> hist(E, 0);
  for (int32_t id : want_ids) ++hist[id];
  CHECK_MSG(counts == hist, what + ": histogram differs");

  // Scatter with the offsets the plan kernel computes (exclusive sum of the counts).
  std::vector<int32_t> offsets(E + 1, 0), cursors(E, 0), perm(ids.size(), -1), row_of(ids.size(), -1),
      row_expert(ids.size(), -1);
  for (int32_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + hist[e];
  const int32_t entries = T * k;
  simt::launch(dim3((entries + 127) / 128), 128, 0, [&] {
    rt::scatter_kernel(ids.data(), entries, k, offsets.data(), cursors.data(), perm.data(), row_of.data(),
                       row_expert.data());
  });
  bool ok = true;
  std::vector<int> seen(entries, 0);
  for (int32_t i = 0; i < entries; ++i) {
    const int32_t row = row_of[i], e = ids[i];
    ok = ok && row >= offsets[e] && row < offsets[e + 1] && perm[row] == i / k && row_expert[row] == e;
    if (row >= 0 && row < entries) ++seen[row];
  }
  ok = ok && std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; });
  CHECK_MSG(ok, what + ": scatter is not a permutation into the experts' row ranges");
}

// Combine kernel vs the contract: out = bf16(sum_j w_j y_j + sigmoid(x . g) y_shared).
void test_combine(int32_t T, int32_t k, int32_t H, bool shared) {
  const auto y = random_bf16(static_cast<std::size_t>(T) * k * H);
  const auto ys = random_bf16(static_cast<std::size_t>(T) * H);
  const auto x = random_bf16(static_cast<std::size_t>(T) * H);
  auto g = random_bf16(H);
  for (auto& v : g) v = fp4::float_to_bf16(fp4::bf16_to_float(v) * 0.05f);
  std::vector<int32_t> row_of(static_cast<std::size_t>(T) * k);
  for (std::size_t i = 0; i < row_of.size(); ++i) row_of[i] = static_cast<int32_t>(row_of.size() - 1 - i);
  std::vector<float> w(row_of.size());
  for (auto& v : w) v = static_cast<float>(rng() % 1000) / 1000.0f;
  std::vector<uint16_t> out(static_cast<std::size_t>(T) * H, 0xFFFF);
  const auto bf = [](const std::vector<uint16_t>& v) { return reinterpret_cast<const __nv_bfloat16*>(v.data()); };
  simt::launch(dim3(T), rt::kCombineThreads, 0, [&] {
    rt::combine_kernel(bf(y), row_of.data(), w.data(), k, H, shared ? bf(ys) : nullptr, bf(x), bf(g),
                       reinterpret_cast<__nv_bfloat16*>(out.data()));
  });
  std::size_t bad = 0;
  for (int32_t t = 0; t < T; ++t) {
    double z = 0;
    for (int32_t h = 0; h < H; ++h) z += bf16(x[t * H + h]) * bf16(g[h]);
    const double gate = 1.0 / (1.0 + std::exp(-z));
    for (int32_t h = 0; h < H; ++h) {
      double want = 0, mag = 0;
      for (int32_t j = 0; j < k; ++j) {
        const double p = w[t * k + j] * bf16(y[static_cast<std::size_t>(row_of[t * k + j]) * H + h]);
        want += p;
        mag += std::fabs(p);
      }
      if (shared) {
        want += gate * bf16(ys[t * H + h]);
        mag += std::fabs(gate * bf16(ys[t * H + h]));
      }
      bad += !close(bf16(out[t * H + h]), want, mag);
    }
  }
  CHECK_MSG(bad == 0, "combine T=" + std::to_string(T) + " k=" + std::to_string(k) + " H=" +
                          std::to_string(H) + (shared ? " shared" : "") + ": " + std::to_string(bad) +
                          " wrong outputs");
}

}  // namespace

// Qwen3.5-35B-A3B's K: gate_up reads H = 2048 (32 k-stages: the cp.async ring refills in its
// steady state, which K <= 128 never reaches), down reads I = 512; a few output columns only, to
// keep the emulator's time in bounds. Its own ctest.
void check_real_shapes() {
  const auto rm = mo::ScaleLayout::kRowMajor, sw = mo::ScaleLayout::kSwizzled128x4,
             fr = mo::ScaleLayout::kW4A16Fragments;
  test_dense<w4::SmallPlainTile>(1, 64, 2048, rm, 1);
  test_grouped<w4::SmallTile, true>({1, 0, 2}, 64, 2048, sw, 2);
  test_grouped<w4::MediumTile, false>({3, 1}, 64, 512, rm, 2);
  test_grouped<w4::LargeTile, true>({130}, 64, 2048, rm, 1);
  // The fragment layout (sm_90 / sm_120 engines): decode gate_up and down, prefill gate_up.
  test_grouped<w4::SmallTile, true>({1, 0, 2}, 64, 2048, fr, 2);
  test_grouped<w4::SmallPlainTile, false>({1, 2}, 64, 512, fr, 2);
  test_grouped<w4::LargeTile, true>({130}, 64, 2048, fr, 1);
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--real-shapes") {
    check_real_shapes();
    return qwen35_trt::test::report();
  }
  const auto rm = mo::ScaleLayout::kRowMajor, sw = mo::ScaleLayout::kSwizzled128x4,
             fr = mo::ScaleLayout::kW4A16Fragments;
  // Dense (Nvfp4Linear): partial row / column / K tiles, 16- and 8-byte weight chunks, byte-wise
  // (K % 64 != 0, row-major) and 4-byte scale loads, more tiles than CTAs.
  test_dense<w4::SmallPlainTile>(20, 40, 96, rm, 2);
  test_dense<w4::SmallPlainTile>(3, 5, 48, sw, 1);
  test_dense<w4::SmallPlainTile>(1, 1, 16, rm, 1);
  test_dense<w4::MediumTile>(70, 64, 128, rm, 1);
  // Grouped with SwiGLU (routed gate_up): empty experts, a partial tile, row offsets into the
  // fused matrix, the [E, 2] globals.
  test_grouped<w4::SmallTile, true>({0, 5, 17, 1}, 32, 64, rm, 3);
  test_grouped<w4::SmallTile, true>({3, 0, 2}, 48, 96, sw, 2);
  test_grouped<w4::LargeTile, true>({130, 3}, 64, 64, sw, 2);
  // Grouped plain (routed down).
  test_grouped<w4::MediumTile, false>({70, 0, 9}, 48, 32, rm, 2);
  // The fragment layout: full groups only (fast kernel), full groups and a partial last group in
  // ModelOpt order (K % 64 = 32, 16), a partial group only (K = 48, 32), zero and subnormal scales.
  test_dense<w4::SmallPlainTile>(20, 40, 96, fr, 2);
  test_dense<w4::SmallPlainTile>(3, 5, 48, fr, 1);
  test_dense<w4::MediumTile>(70, 64, 128, fr, 1);
  test_grouped<w4::SmallTile, true>({0, 5, 17, 1}, 32, 64, fr, 3);
  test_grouped<w4::LargeTile, true>({130, 3}, 64, 80, fr, 2);
  test_grouped<w4::MediumTile, false>({70, 0, 9}, 48, 32, fr, 2);
  // Routing (top-k, weights, histogram), scatter and combine.
  test_route(37, 40, 6, false);
  test_route(9, 256, 8, true);
  test_route(5, 3, 3, false);
  test_combine(3, 4, 64, true);
  test_combine(2, 8, 2048, true);
  test_combine(4, 1, 16, false);
  return qwen35_trt::test::report();
}
