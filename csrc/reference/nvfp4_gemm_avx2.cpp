// The AVX2 and AVX-512 kernels of the fused NVFP4 GEMM (nvfp4_gemm.h). Their functions carry
// __attribute__((target(...))) rather than the file being built with -mavx2 / -mavx512f, so no
// such code leaks into inline functions shared with the rest of the library and the build runs on
// any x86-64; cpu::isa() only selects a kernel on CPUs that have its instructions.
#include "nvfp4_gemm.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define QWEN35_HAVE_AVX2_KERNEL 1
// GCC 12's AVX-512 cast / insert / broadcast intrinsics pass an uninitialised register as their
// "don't care" operand and warn about it where they are inlined; the warning is about the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace qwen35_trt::moe::detail {

#ifdef QWEN35_HAVE_AVX2_KERNEL
namespace {

#define QWEN35_AVX2 __attribute__((target("avx2")))
#define QWEN35_AVX512 __attribute__((target("avx2,avx512f")))

constexpr int kBlock = nvfp4::kBlockSize;

// Eight codes (low 4 bits of each lane) -> table values times the block scale. The table's two
// halves are codes 0..7 and 8..15; bit 3 of the code, moved to the sign bit, picks the half.
QWEN35_AVX2 inline __m256 decode8(__m256i codes, __m256 pos, __m256 neg, __m256 scale) {
  const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(pos, codes),
                                    _mm256_permutevar8x32_ps(neg, codes),
                                    _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28)));
  return _mm256_mul_ps(v, scale);
}

// Row `row` of the matrix into out [K]: out[2j] = e2m1(low nibble of byte j) * scale, out[2j + 1]
// = e2m1(high nibble) * scale, as the portable kernel.
QWEN35_AVX2 void decode_row(const RowTask& t, std::size_t row, float* out) {
  const std::size_t K = t.K, blocks = K / kBlock;
  const float* e4m3 = e4m3_table();
  const __m256 pos = _mm256_loadu_ps(e2m1_table()), neg = _mm256_loadu_ps(e2m1_table() + 8);
  const __m256i nibble = _mm256_set1_epi32(0xF);
  const uint8_t* p = t.packed + row * (K / 2);
  for (std::size_t b = 0; b < blocks; ++b) {
    const __m256 s = _mm256_set1_ps(e4m3[t.scales[scale_offset(t.layout, row, b, blocks)]]);
    const __m256i bytes =
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + b * (kBlock / 2))));
    const __m256 lo = decode8(_mm256_and_si256(bytes, nibble), pos, neg, s);
    const __m256 hi = decode8(_mm256_srli_epi32(bytes, 4), pos, neg, s);
    // (l0 h0 l1 h1 | l4 h4 l5 h5) and (l2 h2 l3 h3 | l6 h6 l7 h7) -> columns 0..7 and 8..15.
    const __m256 a = _mm256_unpacklo_ps(lo, hi), c = _mm256_unpackhi_ps(lo, hi);
    _mm256_storeu_ps(out + b * kBlock, _mm256_permute2f128_ps(a, c, 0x20));
    _mm256_storeu_ps(out + b * kBlock + 8, _mm256_permute2f128_ps(a, c, 0x31));
  }
}

// Lane l of acc is partial sum l; the K % 8 tail goes to lanes 0.. in order, then the pairwise
// combine of dot_fixed_order.
QWEN35_AVX2 inline float finish(__m256 acc, const float* x, const float* w, std::size_t k,
                                std::size_t K) {
  alignas(32) float l[8];
  _mm256_store_ps(l, acc);
  for (int i = 0; k < K; ++k, ++i) l[i] += x[k] * w[k];
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

// R decoded weight rows (w, stride K) against T token rows (x, stride K).
template <int R, int T>
QWEN35_AVX2 void dots(const float* x, const float* w, std::size_t K, float* out, std::size_t ld) {
  __m256 acc[T][R];
  for (int m = 0; m < T; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  std::size_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv[T];
    for (int m = 0; m < T; ++m) xv[m] = _mm256_loadu_ps(x + m * K + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + r * K + k);
      for (int m = 0; m < T; ++m) acc[m][r] = _mm256_add_ps(acc[m][r], _mm256_mul_ps(xv[m], wv));
    }
  }
  for (int m = 0; m < T; ++m)
    for (int r = 0; r < R; ++r) out[m * ld + r] = finish(acc[m][r], x + m * K, w + r * K, k, K);
}

template <int R>
QWEN35_AVX2 void dots_all_tokens(const RowTask& t, const float* w, float* out) {
  std::size_t m = 0;
  for (; m + 2 <= t.tokens; m += 2) dots<R, 2>(t.x + m * t.K, w, t.K, out + m * t.ld, t.ld);
  if (m < t.tokens) dots<R, 1>(t.x + m * t.K, w, t.K, out + m * t.ld, t.ld);
}

// AVX-512: two tokens per register, lanes 0-7 token m and 8-15 token m + 1, each half the
// AVX2 accumulator of its token (the same eight partial sums in the same order), so the results
// are those of the AVX2 and portable kernels bit for bit with half the arithmetic instructions.
QWEN35_AVX512 inline __m512 two_tokens(const float* x0, const float* x1) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(x0))),
                                             _mm256_castps_pd(_mm256_loadu_ps(x1)), 1));
}
QWEN35_AVX512 inline __m512 both_halves(const float* w) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(w))));
}

// R decoded weight rows against P pairs of token rows (tokens m, m + 1 per pair).
template <int R, int P>
QWEN35_AVX512 void dots512(const float* x, const float* w, std::size_t K, float* out, std::size_t ld) {
  __m512 acc[P][R];
  for (int q = 0; q < P; ++q)
    for (int r = 0; r < R; ++r) acc[q][r] = _mm512_setzero_ps();
  std::size_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m512 xv[P];
    for (int q = 0; q < P; ++q) xv[q] = two_tokens(x + 2 * q * K + k, x + (2 * q + 1) * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = both_halves(w + r * K + k);
      for (int q = 0; q < P; ++q) acc[q][r] = _mm512_add_ps(acc[q][r], _mm512_mul_ps(xv[q], wv));
    }
  }
  for (int q = 0; q < P; ++q)
    for (int r = 0; r < R; ++r) {
      const __m256 lo = _mm512_castps512_ps256(acc[q][r]);
      const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[q][r]), 1));
      out[(2 * q) * ld + r] = finish(lo, x + 2 * q * K, w + r * K, k, K);
      out[(2 * q + 1) * ld + r] = finish(hi, x + (2 * q + 1) * K, w + r * K, k, K);
    }
}

// R decoded rows against every token of the task: four tokens at a time, then a pair, then one
// (the AVX2 kernel, the same order).
template <int R>
QWEN35_AVX512 void dots512_all_tokens(const RowTask& t, const float* w, float* out) {
  std::size_t m = 0;
  for (; m + 4 <= t.tokens; m += 4) dots512<R, 2>(t.x + m * t.K, w, t.K, out + m * t.ld, t.ld);
  for (; m + 2 <= t.tokens; m += 2) dots512<R, 1>(t.x + m * t.K, w, t.K, out + m * t.ld, t.ld);
  if (m < t.tokens) dots<R, 1>(t.x + m * t.K, w, t.K, out + m * t.ld, t.ld);
}

}  // namespace

QWEN35_AVX512 void gemm_rows_avx512(const RowTask& t, float* buf) {
  std::size_t row = t.row0;
  const std::size_t end = t.row0 + t.rows;
  // As the AVX2 kernel: kDecodeRows decoded rows against four tokens at a time, four rows per call.
  constexpr int kGroups = static_cast<int>(kDecodeRows / 4);
  for (; row + kDecodeRows <= end; row += kDecodeRows) {
    for (std::size_t r = 0; r < kDecodeRows; ++r) decode_row(t, row + r, buf + r * t.K);
    float* out = t.sums + (row - t.first_row);
    std::size_t m = 0;
    for (; m + 4 <= t.tokens; m += 4) {
      for (int g = 0; g < kGroups; ++g) dots512<4, 2>(t.x + m * t.K, buf + 4 * g * t.K, t.K, out + m * t.ld + 4 * g, t.ld);
    }
    for (; m + 2 <= t.tokens; m += 2) {
      for (int g = 0; g < kGroups; ++g) dots512<4, 1>(t.x + m * t.K, buf + 4 * g * t.K, t.K, out + m * t.ld + 4 * g, t.ld);
    }
    if (m < t.tokens) {
      for (int g = 0; g < kGroups; ++g) dots<4, 1>(t.x + m * t.K, buf + 4 * g * t.K, t.K, out + m * t.ld + 4 * g, t.ld);
    }
  }
  for (; row + 4 <= end; row += 4) {
    for (int r = 0; r < 4; ++r) decode_row(t, row + r, buf + r * t.K);
    dots512_all_tokens<4>(t, buf, t.sums + (row - t.first_row));
  }
  for (; row < end; ++row) {
    decode_row(t, row, buf);
    dots512_all_tokens<1>(t, buf, t.sums + (row - t.first_row));
  }
}

QWEN35_AVX2 void gemm_rows_avx2(const RowTask& t, float* buf) {
  std::size_t row = t.row0;
  const std::size_t end = t.row0 + t.rows;
  // kDecodeRows decoded rows (L2-resident) against each token pair in turn, four rows per kernel
  // call: a token row is read once per kDecodeRows weight rows rather than once per four.
  constexpr int kGroups = static_cast<int>(kDecodeRows / 4);
  for (; row + kDecodeRows <= end; row += kDecodeRows) {
    for (std::size_t r = 0; r < kDecodeRows; ++r) decode_row(t, row + r, buf + r * t.K);
    float* out = t.sums + (row - t.first_row);
    std::size_t m = 0;
    for (; m + 2 <= t.tokens; m += 2) {
      for (int g = 0; g < kGroups; ++g) dots<4, 2>(t.x + m * t.K, buf + 4 * g * t.K, t.K, out + m * t.ld + 4 * g, t.ld);
    }
    if (m < t.tokens) {
      for (int g = 0; g < kGroups; ++g) dots<4, 1>(t.x + m * t.K, buf + 4 * g * t.K, t.K, out + m * t.ld + 4 * g, t.ld);
    }
  }
  for (; row + 4 <= end; row += 4) {
    for (int r = 0; r < 4; ++r) decode_row(t, row + r, buf + r * t.K);
    dots_all_tokens<4>(t, buf, t.sums + (row - t.first_row));
  }
  for (; row < end; ++row) {
    decode_row(t, row, buf);
    dots_all_tokens<1>(t, buf, t.sums + (row - t.first_row));
  }
}

#else

void gemm_rows_avx2(const RowTask& t, float* buf) { gemm_rows_portable(t, buf); }
void gemm_rows_avx512(const RowTask& t, float* buf) { gemm_rows_portable(t, buf); }

#endif

}  // namespace qwen35_trt::moe::detail
