// The fused NVFP4 GEMM of the CPU reference: work split, ISA dispatch and the portable kernel
// (the AVX2 kernel is in nvfp4_gemm_avx2.cpp). See nvfp4_gemm.h.
#include "nvfp4_gemm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "qwen35_trt/cpu.h"

namespace qwen35_trt::moe::detail {
namespace {

namespace fp4 = qwen35_trt::nvfp4;

// Below this many multiply-adds a call runs on the caller's thread: waking the pool costs more.
constexpr std::size_t kMinParallelWork = std::size_t{1} << 20;
// Rows per task are a multiple of the AVX2 kernel's row block.
constexpr std::size_t kRowBlock = 4;

struct Tables {
  float e2m1[16];
  float e4m3[256];
  Tables() {
    for (int c = 0; c < 16; ++c) e2m1[c] = fp4::decode_e2m1(static_cast<uint8_t>(c));
    for (int b = 0; b < 256; ++b) e4m3[b] = fp4::decode_e4m3(static_cast<uint8_t>(b));
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const float* e2m1_table() { return tables().e2m1; }
const float* e4m3_table() { return tables().e4m3; }

// std::fma is a libm call unless the compiler may emit the FMA instruction, and the portable
// build may not: a second copy compiled for FMA, chosen at load time on CPUs that have it, keeps
// the portable kernel usable (the same bits either way: fma is exactly rounded).
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define QWEN35_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define QWEN35_FMA_CLONES
#endif

QWEN35_FMA_CLONES float dot_fixed_order(const float* a, const float* b, std::size_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; ++l) acc[l] = std::fma(a[k + l], b[k + l], acc[l]);
  }
  for (int l = 0; k < n; ++k, ++l) acc[l] = std::fma(a[k], b[k], acc[l]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

void gemm_rows_portable(const RowTask& t, float* buf) {
  const std::size_t K = t.K, blocks = K / fp4::kBlockSize;
  const float* e2m1 = e2m1_table();
  const float* e4m3 = e4m3_table();
  for (std::size_t row = t.row0; row < t.row0 + t.rows; ++row) {
    const uint8_t* p = t.packed + row * (K / 2);
    for (std::size_t b = 0; b < blocks; ++b) {
      const float s = e4m3[t.scales[scale_offset(t.layout, row, b, blocks)]];
      float* o = buf + b * fp4::kBlockSize;
      const uint8_t* pb = p + b * (fp4::kBlockSize / 2);
      for (int j = 0; j < fp4::kBlockSize / 2; ++j) {
        o[2 * j] = e2m1[pb[j] & 0xF] * s;
        o[2 * j + 1] = e2m1[pb[j] >> 4] * s;
      }
    }
    float* out = t.sums + (row - t.first_row);
    for (std::size_t m = 0; m < t.tokens; ++m) out[m * t.ld] = dot_fixed_order(t.x + m * K, buf, K);
  }
}

void pack_token_pairs(const float* x, std::size_t tokens, std::size_t K, float* out) {
  const std::size_t steps = K / 8;
  for (std::size_t p = 0; p < (tokens + 1) / 2; ++p) {
    for (std::size_t h = 0; h < 2; ++h) {
      const std::size_t m = 2 * p + h;
      for (std::size_t s = 0; s < steps; ++s) {
        float* o = out + (p * steps + s) * 16 + h * 8;
        for (int l = 0; l < 8; ++l) o[l] = m < tokens ? x[m * K + 8 * s + l] : 0.0f;
      }
    }
  }
}

void nvfp4_gemm(const Nvfp4Weights& w, std::size_t index, std::size_t row0, std::size_t rows,
                const float* x, std::size_t tokens, float* sums, std::size_t ld) {
  if (rows == 0 || tokens == 0) return;
  const std::size_t K = w.cols;
  RowTask base{w.packed.data() + index * w.rows * (K / 2),
               w.scales.data() + index * scale_bytes(w.layout, w.rows, K),
               w.layout, K, row0, rows, x, tokens, nullptr, sums, ld, row0};
  const cpu::Isa isa = cpu::isa();
  thread_local std::vector<float> pairs;
  Scratch<float> pairs_scratch(pairs);
  if (isa == cpu::Isa::kAvx512) {
    float* xp = aligned_floats(pairs_scratch.vec(), (tokens + 1) / 2 * 2 * K);
    pack_token_pairs(x, tokens, K, xp);
    base.xp = xp;
  }
  const auto kernel = isa == cpu::Isa::kAvx512 ? gemm_rows_avx512 : isa == cpu::Isa::kAvx2 ? gemm_rows_avx2 : gemm_rows_portable;
  const auto run = [&](const RowTask& t) {
    thread_local std::vector<float> buf;
    kernel(t, aligned_floats(buf, kDecodeRows * K));
  };
  const std::size_t threads = cpu::num_threads();
  if (threads <= 1 || tokens * rows * K < kMinParallelWork || rows <= kRowBlock) {
    run(base);
    return;
  }
  // About four tasks per thread, so that uneven progress evens out.
  std::size_t chunk = (rows + 4 * threads - 1) / (4 * threads);
  chunk = std::max(kRowBlock, (chunk + kRowBlock - 1) / kRowBlock * kRowBlock);
  const std::size_t tasks = (rows + chunk - 1) / chunk;
  cpu::parallel_for(tasks, [&](std::size_t i) {
    RowTask t = base;
    t.row0 = row0 + i * chunk;
    t.rows = std::min(chunk, rows - i * chunk);
    run(t);
  });
}

}  // namespace qwen35_trt::moe::detail
