// ctest for the fused Nvfp4Linear / Nvfp4MoE CPU kernels (moe::nvfp4_linear, moe::nvfp4_moe)
// against the unfused form (moe::naive): bit-identical outputs on random shapes, both activation
// modes, both scale layouts, with and without a shared expert, under every ISA this CPU runs
// (portable, AVX2) and several thread counts. Scale bytes are fully random here (NaN, negative,
// subnormal and overflowing scales included), so the kernels must agree on every corner.
//
// Run with QWEN35_CPU_ISA set, it also checks that the variable chose the ISA.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "qwen35_trt/cpu.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/nvfp4.h"
#include "nvfp4_gemm.h"  // csrc/reference: the fused GEMM itself

namespace cpu = qwen35_trt::cpu;
namespace fp4 = qwen35_trt::nvfp4;
namespace mo = qwen35_trt::moe;

namespace {

std::mt19937 rng(2024);

std::vector<uint16_t> random_bf16(std::size_t n, double scale) {
  std::normal_distribution<double> d(0.0, scale);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = fp4::float_to_bf16(static_cast<float>(d(rng)));
  return v;
}

std::vector<uint8_t> random_bytes(std::size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Scales: mostly the ordinary range 2^-3 .. 2^3, or (wild) any byte at all.
std::vector<uint8_t> random_scales(std::size_t n, bool wild) {
  if (wild) return random_bytes(n);
  std::uniform_int_distribution<int> e(4, 10), m(0, 7);
  std::vector<uint8_t> v(n);
  for (auto& s : v) s = static_cast<uint8_t>((e(rng) << 3) | m(rng));
  return v;
}

// `count` random matrices [rows, cols] with their scales in `layout` (padding bytes random too).
struct Matrix {
  std::vector<uint8_t> packed, scales;
  mo::Nvfp4Weights view;
};

void make_matrix(Matrix& m, std::size_t count, std::size_t rows, std::size_t cols,
                 mo::ScaleLayout layout, bool wild) {
  m.packed = random_bytes(count * rows * cols / 2);
  m.scales = random_scales(count * mo::scale_bytes(layout, rows, cols), wild);
  m.view.packed = {m.packed.data(), m.packed.size()};
  m.view.scales = {m.scales.data(), m.scales.size()};
  m.view.layout = layout;
  m.view.count = count;
  m.view.rows = rows;
  m.view.cols = cols;
}

std::vector<cpu::Isa> isas() {
  std::vector<cpu::Isa> v{cpu::Isa::kPortable};
  if (cpu::isa_supported(cpu::Isa::kAvx2)) v.push_back(cpu::Isa::kAvx2);
  if (cpu::isa_supported(cpu::Isa::kAvx512)) v.push_back(cpu::Isa::kAvx512);
  return v;
}

const std::size_t kThreads[] = {1, 2, 3};

std::string describe(cpu::Isa isa, std::size_t threads) {
  return std::string(cpu::isa_name(isa)) + ", " + std::to_string(threads) + " thread(s)";
}

// Bitwise equality of two bf16 outputs (NaN outputs are the one pattern 0x7FC0 in both).
bool same(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 2) == 0;
}

void test_linear(std::size_t M, std::size_t N, std::size_t K, mo::Activation act,
                 mo::ScaleLayout layout, bool wild) {
  Matrix w;
  make_matrix(w, 1, N, K, layout, wild);
  const auto x = random_bf16(M * K, 1.0);
  const mo::Nvfp4LinearWeights lw{w.view, 0.0123f, 0.37f};
  std::vector<uint16_t> want(M * N), got(M * N);
  mo::naive::nvfp4_linear({x.data(), x.size()}, M, lw, act, {want.data(), want.size()});
  for (const auto isa : isas()) {
    for (const std::size_t threads : kThreads) {
      cpu::set_isa(isa);
      cpu::set_num_threads(threads);
      std::fill(got.begin(), got.end(), 0xFFFF);
      mo::nvfp4_linear({x.data(), x.size()}, M, lw, act, {got.data(), got.size()});
      CHECK_MSG(same(got, want), "linear M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                     " K=" + std::to_string(K) + " act=" +
                                     std::to_string(static_cast<int>(act)) + " layout=" +
                                     std::to_string(static_cast<int>(layout)) +
                                     (wild ? " wild" : "") + ", " + describe(isa, threads));
    }
  }
}

// The GEMM's fp32 sums themselves (before any bf16 rounding hides a difference): bit-equal to
// dot_fixed_order over rows dequantized with the scalar codec, for a row range of one matrix of
// a stack, written at a column offset of a wider output.
void test_gemm_sums(std::size_t tokens, std::size_t count, std::size_t N, std::size_t K,
                    mo::ScaleLayout layout) {
  Matrix w;
  make_matrix(w, count, N, K, layout, true);
  std::vector<float> x(tokens * K);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  const std::size_t index = count - 1, row0 = N / 3, rows = N - N / 3, ld = rows + 5;
  const std::size_t blocks = K / 16;
  std::vector<float> want(tokens * ld, 0.0f), row(K);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t n = row0 + r;
    for (std::size_t k = 0; k < K; ++k) {
      const uint8_t byte = w.packed[(index * N + n) * (K / 2) + k / 2];
      const uint8_t sb = w.scales[index * mo::scale_bytes(layout, N, K) +
                                  mo::scale_offset(layout, n, k / 16, blocks)];
      row[k] = fp4::decode_e2m1(static_cast<uint8_t>(k % 2 ? byte >> 4 : byte & 0xF)) *
               fp4::decode_e4m3(sb);
    }
    for (std::size_t m = 0; m < tokens; ++m) {
      want[m * ld + r] = mo::detail::dot_fixed_order(x.data() + m * K, row.data(), K);
    }
  }
  for (const auto isa : isas()) {
    for (const std::size_t threads : kThreads) {
      cpu::set_isa(isa);
      cpu::set_num_threads(threads);
      std::vector<float> got(tokens * ld, 0.0f);
      mo::detail::nvfp4_gemm(w.view, index, row0, rows, x.data(), tokens, got.data(), ld);
      CHECK_MSG(std::memcmp(got.data(), want.data(), got.size() * 4) == 0,
                "gemm sums tokens=" + std::to_string(tokens) + " N=" + std::to_string(N) + " K=" +
                    std::to_string(K) + " layout=" + std::to_string(static_cast<int>(layout)) +
                    ", " + describe(isa, threads));
    }
  }
}

struct MoeCase {
  std::size_t T, E, k, H, I, Is;  // Is = 0: no shared expert
  mo::Activation act;
  mo::ScaleLayout layout;
  bool wild;
};

void test_moe(const MoeCase& c) {
  Matrix gu, dn, sg, su, sd;
  make_matrix(gu, c.E, 2 * c.I, c.H, c.layout, c.wild);
  make_matrix(dn, c.E, c.H, c.I, c.layout, c.wild);
  std::uniform_real_distribution<float> pos(0.002f, 0.05f);
  std::vector<float> gu_s2(2 * c.E), dn_s2(c.E), gu_is(c.E), dn_is(c.E);
  for (auto* v : {&gu_s2, &dn_s2, &gu_is, &dn_is})
    for (auto& s : *v) s = pos(rng);
  mo::MoeExperts ex;
  ex.num_experts = c.E;
  ex.hidden = c.H;
  ex.intermediate = c.I;
  ex.gate_up = gu.view;
  ex.down = dn.view;
  ex.gate_up_scale_2 = {gu_s2.data(), gu_s2.size()};
  ex.down_scale_2 = {dn_s2.data(), dn_s2.size()};
  ex.gate_up_input_scale = {gu_is.data(), gu_is.size()};
  ex.down_input_scale = {dn_is.data(), dn_is.size()};
  mo::SharedExpert sh;
  std::vector<uint16_t> shared_gate;
  if (c.Is) {
    make_matrix(sg, 1, c.Is, c.H, c.layout, c.wild);
    make_matrix(su, 1, c.Is, c.H, c.layout, c.wild);
    make_matrix(sd, 1, c.H, c.Is, c.layout, c.wild);
    shared_gate = random_bf16(c.H, 0.1);
    sh.gate = {sg.view, pos(rng), pos(rng)};
    sh.up = {su.view, pos(rng), pos(rng)};
    sh.down = {sd.view, pos(rng), pos(rng)};
    sh.gate_weight = {shared_gate.data(), shared_gate.size()};
  }
  const auto x = random_bf16(c.T * c.H, 1.0);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> logits(c.T * c.E);
  for (auto& l : logits) l = nd(rng);
  const mo::SharedExpert* shp = c.Is ? &sh : nullptr;
  std::vector<uint16_t> want(c.T * c.H), got(c.T * c.H);
  mo::naive::nvfp4_moe({x.data(), x.size()}, {logits.data(), logits.size()}, c.T, c.k, ex, shp,
                       c.act, {want.data(), want.size()});
  for (const auto isa : isas()) {
    for (const std::size_t threads : kThreads) {
      cpu::set_isa(isa);
      cpu::set_num_threads(threads);
      std::fill(got.begin(), got.end(), 0xFFFF);
      mo::nvfp4_moe({x.data(), x.size()}, {logits.data(), logits.size()}, c.T, c.k, ex, shp,
                    c.act, {got.data(), got.size()});
      CHECK_MSG(same(got, want),
                "moe T=" + std::to_string(c.T) + " E=" + std::to_string(c.E) + " k=" +
                    std::to_string(c.k) + " H=" + std::to_string(c.H) + " I=" + std::to_string(c.I) +
                    " Is=" + std::to_string(c.Is) + " act=" + std::to_string(static_cast<int>(c.act)) +
                    " layout=" + std::to_string(static_cast<int>(c.layout)) + (c.wild ? " wild" : "") +
                    ", " + describe(isa, threads));
    }
  }
}

void test_isa_settings() {
  const char* env = std::getenv("QWEN35_CPU_ISA");
  if (env != nullptr && *env != '\0') {
    CHECK_MSG(cpu::isa() == cpu::parse_isa(env), std::string("QWEN35_CPU_ISA=") + env);
  } else if (cpu::isa_supported(cpu::Isa::kAvx512)) {
    CHECK(cpu::isa() == cpu::Isa::kAvx512);  // the default: the widest the CPU has
  } else if (cpu::isa_supported(cpu::Isa::kAvx2)) {
    CHECK(cpu::isa() == cpu::Isa::kAvx2);
  }
  CHECK_THROWS(cpu::parse_isa("sse9"), "isa");
  CHECK_THROWS(cpu::set_num_threads(0), "threads");
  std::printf("ISA %s (avx2 %s, avx512 %s)\n", cpu::isa_name(cpu::isa()),
              cpu::isa_supported(cpu::Isa::kAvx2) ? "available" : "not available",
              cpu::isa_supported(cpu::Isa::kAvx512) ? "available" : "not available");
}

// A nested and an overlapping parallel_for each run every task exactly once.
void test_parallel_for() {
  cpu::set_num_threads(3);
  std::vector<int> hits(64, 0);
  cpu::parallel_for(8, [&](std::size_t i) {
    cpu::parallel_for(8, [&](std::size_t j) { ++hits[i * 8 + j]; });
  });
  bool once = true;
  for (int h : hits) once = once && h == 1;
  CHECK(once);
  // The tasks of one call do run on several threads.
  std::mutex mu;
  std::set<std::thread::id> seen;
  cpu::parallel_for(6, [&](std::size_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mu);
    seen.insert(std::this_thread::get_id());
  });
  CHECK(seen.size() > 1);
  bool threw = false;
  try {
    cpu::parallel_for(5, [](std::size_t i) {
      if (i == 3) throw std::runtime_error("task 3");
    });
  } catch (const std::runtime_error&) {
    threw = true;
  }
  CHECK(threw);
}

}  // namespace

int main() {
  test_isa_settings();
  test_parallel_for();
  const auto A16 = mo::Activation::kW4A16, A4 = mo::Activation::kW4A4;
  const auto RM = mo::ScaleLayout::kRowMajor, SW = mo::ScaleLayout::kSwizzled128x4;
  for (const auto layout : {RM, SW}) {
    test_gemm_sums(1, 1, 7, 16, layout);
    test_gemm_sums(3, 2, 50, 48, layout);
    test_gemm_sums(6, 3, 200, 160, layout);
    test_gemm_sums(9, 2, 1400, 256, layout);  // split over the threads
    // AVX-512 blocking: 66 token pairs (one more than a pair block at K = 2048, the last one
    // alone), K over several K blocks, 37 rows (16-row blocks, 8-row sums and single rows).
    test_gemm_sums(131, 1, 37, 2048, layout);
    test_gemm_sums(17, 1, 70, 1040, layout);  // 65 scale blocks: an odd last block to decode
    test_gemm_sums(1, 2, 37, 1040, layout);   // one token: row pairs and an odd last row
  }
  for (const auto act : {A16, A4}) {
    for (const auto layout : {RM, SW}) {
      for (const bool wild : {false, true}) {
        // Row counts off the 4-row block, 1..3 and odd token counts, K of one and several blocks.
        test_linear(1, 1, 16, act, layout, wild);
        test_linear(3, 7, 48, act, layout, wild);
        test_linear(2, 5, 16, act, layout, wild);
        test_linear(5, 130, 80, act, layout, wild);
        // Above nvfp4_gemm.cpp's kMinParallelWork (2^20 multiply-adds), so split over the threads
        // (rows not a multiple of the split).
        test_linear(17, 301, 256, act, layout, wild);
        test_linear(3, 1030, 512, act, layout, wild);
      }
    }
  }
  for (const auto act : {A16, A4}) {
    for (const auto layout : {RM, SW}) {
      for (const bool wild : {false, true}) {
        test_moe({1, 4, 2, 32, 16, 0, act, layout, wild});
        test_moe({3, 5, 3, 48, 32, 16, act, layout, wild});
        test_moe({9, 6, 1, 64, 48, 48, act, layout, wild});
        test_moe({7, 3, 3, 16, 16, 32, act, layout, wild});
        // GEMMs above kMinParallelWork: split over the threads.
        test_moe({64, 4, 2, 256, 128, 0, act, layout, wild});
        test_moe({16, 2, 2, 512, 256, 256, act, layout, wild});
      }
    }
  }
  return qwen35_trt::test::report();
}
