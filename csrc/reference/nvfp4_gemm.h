// The fused NVFP4 GEMM of the CPU reference (internal to qwen35_reference): weight rows are
// decoded (E2M1 code x E4M3 block scale, exact in fp32) into a small per-thread buffer and dotted
// with every activation row of the call, so no fp32 copy of a matrix is ever made and each weight
// row is decoded once per call, not once per token.
//
// Every dot product keeps the reference's fixed order (dot_fixed_order below): eight fp32
// partial sums, element k into lane k % 8 by a fused multiply-add, combined as
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). An AVX2 accumulator stepping over k by 8
// is that order lane for lane, so the portable, AVX2 and AVX-512 kernels agree bit for bit. The
// FMA is exact-product-then-round, the same as a multiply then an add whenever the product is
// exact in fp32, which it is for the model's operands (bf16 or FP4-quantised activations times
// decoded weights of at most 6 significant bits) unless it underflows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "qwen35_trt/moe.h"

namespace qwen35_trt::moe::detail {

// sums[m * ld + j] = sum_k x[m * K + k] * Wq[row0 + j, k] for m < tokens, j < rows, where Wq is
// matrix `index` of `w` without its global (K = w.cols). x: [tokens, K] fp32. Splits the rows
// over the cpu:: thread pool when the call is large enough; the ISA is cpu::isa().
void nvfp4_gemm(const Nvfp4Weights& w, std::size_t index, std::size_t row0, std::size_t rows,
                const float* x, std::size_t tokens, float* sums, std::size_t ld);

// The fixed-order dot product (portable; shared with the unfused path in moe_naive.cpp).
float dot_fixed_order(const float* a, const float* b, std::size_t n);

// Rows the kernels decode at a time at most (`buf` holds kDecodeRows * K floats): each token row
// is then read once per kDecodeRows weight rows, which keeps long prefills out of the L3 stream.
inline constexpr std::size_t kDecodeRows = 16;

// The row kernels behind nvfp4_gemm, one per ISA. Each decodes rows [row0, row0 + rows) of one
// matrix (packed [rows_total, K/2] and its scales) into `buf` (kDecodeRows * K floats) a few rows
// at a time and writes their sums for every token as above.
struct RowTask {
  const uint8_t* packed;  // the matrix's packed codes [w.rows, K/2]
  const uint8_t* scales;  // the matrix's scales (w.layout)
  ScaleLayout layout;
  std::size_t K, row0, rows;
  const float* x;
  std::size_t tokens;
  const float* xp;  // x as token pairs (pack_token_pairs) for the AVX-512 kernel, else nullptr
  float* sums;  // points at column 0 of the call's output; row r of the matrix goes to column r - first_row
  std::size_t ld, first_row;
};
void gemm_rows_portable(const RowTask& t, float* buf);
// Tokens (2p, 2p + 1) interleaved per k-step of 8: out[(p * K/8 + s) * 16 + h * 8 + l] =
// x[(2p + h) * K + 8 s + l], a missing last partner as zeros. out: ceil(tokens / 2) * 2K floats.
void pack_token_pairs(const float* x, std::size_t tokens, std::size_t K, float* out);
void gemm_rows_avx2(const RowTask& t, float* buf);
void gemm_rows_avx512(const RowTask& t, float* buf);

// A per-call buffer kept per thread (thread_local) between calls: a fresh large buffer would be
// fresh pages, zeroed by the kernel on first touch, on every call. One that grew past
// kScratchKeepBytes for a long call is released when that call ends (the guard's scope), so a
// long prefill does not pin its buffers for the life of the thread.
inline constexpr std::size_t kScratchKeepBytes = std::size_t{64} << 20;
template <class T>
class Scratch {
 public:
  explicit Scratch(std::vector<T>& v) : v_(v) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (v_.capacity() * sizeof(T) > kScratchKeepBytes) std::vector<T>().swap(v_);
  }
  std::vector<T>& vec() { return v_; }
  T* get(std::size_t n) {
    if (v_.size() < n) v_.resize(n);
    return v_.data();
  }

 private:
  std::vector<T>& v_;
};

// A 64-byte aligned run of n floats inside `v` (grown as needed): full-register loads of the
// AVX-512 kernel never straddle two cache lines.
inline float* aligned_floats(std::vector<float>& v, std::size_t n) {
  if (v.size() < n + 16) v.resize(n + 16);
  const std::size_t misalign = reinterpret_cast<std::uintptr_t>(v.data()) / sizeof(float) % 16;
  return v.data() + (16 - misalign) % 16;
}

// Exact decodes as tables: e2m1 (16 codes) and e4m3 (256 bit patterns), built from the codec.
const float* e2m1_table();
const float* e4m3_table();

}  // namespace qwen35_trt::moe::detail
