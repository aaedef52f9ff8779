// The AVX2 and AVX-512 kernels of the fused NVFP4 GEMM (nvfp4_gemm.h). Their functions carry
// __attribute__((target(...))) rather than the file being built with -mavx2 / -mavx512f, so no
// such code leaks into inline functions shared with the rest of the library and the build runs on
// any x86-64; cpu::isa() only selects a kernel on CPUs that have its instructions.
#include "nvfp4_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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

#define QWEN35_AVX2 __attribute__((target("avx2,fma")))
#define QWEN35_AVX512 __attribute__((target("avx2,fma,avx512f")))

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
  for (int i = 0; k < K; ++k, ++i) l[i] = std::fma(x[k], w[k], l[i]);
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
      for (int m = 0; m < T; ++m) acc[m][r] = _mm256_fmadd_ps(xv[m], wv, acc[m][r]);
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
// The tokens come pre-interleaved in pairs (nvfp4_gemm.h, pack_token_pairs): one 64-byte load per
// pair and k-step, no shuffles in the inner loop.
// Lanes 8-15 of x (the second token or row of a register that holds two).
QWEN35_AVX512 inline __m256 high_half(__m512 x) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
}
QWEN35_AVX512 inline __m512 both_halves(const float* w) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(w))));
}

// Sixteen packed bytes (lanes of `bytes`, one byte each) -> their low nibbles' values (lo) and high
// nibbles' values (hi) times the lanes' scales: `table` (e2m1_table(), the 16 codes, sign
// included) is one permute. Exact, as decode8.
struct Decoded512 {
  __m512 lo, hi;
};
QWEN35_AVX512 inline Decoded512 decode16_bytes(__m512i bytes, __m512 scale, __m512 table) {
  const __m512i nibble = _mm512_set1_epi32(0xF);
  return {_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(bytes, nibble), table), scale),
          _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(bytes, 4), table), scale)};
}

// Row `row` into out [K] as decode_row, 32 codes (two scale blocks) per step, the two scales one
// blend.
QWEN35_AVX512 void decode_row512(const RowTask& t, std::size_t row, float* out) {
  const std::size_t K = t.K, blocks = K / kBlock;
  const float* e4m3 = e4m3_table();
  const __m512 table = _mm512_loadu_ps(e2m1_table());
  // Output column 2j takes the low nibble of byte j, 2j + 1 its high nibble.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const uint8_t* p = t.packed + row * (K / 2);
  std::size_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    const __m512 s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(e4m3[t.scales[scale_offset(t.layout, row, b, blocks)]]),
                                          _mm512_set1_ps(e4m3[t.scales[scale_offset(t.layout, row, b + 1, blocks)]]));
    const Decoded512 d =
        decode16_bytes(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + b * (kBlock / 2)))), s, table);
    _mm512_storeu_ps(out + b * kBlock, _mm512_permutex2var_ps(d.lo, first, d.hi));
    _mm512_storeu_ps(out + (b + 1) * kBlock, _mm512_permutex2var_ps(d.lo, second, d.hi));
  }
  if (b < blocks) {  // an odd last block: 8 bytes
    const __m512 s = _mm512_set1_ps(e4m3[t.scales[scale_offset(t.layout, row, b, blocks)]]);
    const Decoded512 d =
        decode16_bytes(_mm512_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + b * (kBlock / 2)))), s, table);
    _mm512_storeu_ps(out + b * kBlock, _mm512_permutex2var_ps(d.lo, first, d.hi));
  }
}

// acc[q][r] += pair q of `xp` (16 floats per k-step, pairs `pair_stride` apart) times row r of
// `w` (stride K, each 8-float k-step broadcast to both halves), over `steps` k-steps; the
// accumulators live in memory between calls (16 floats each, 64-byte aligned, accumulator (q, r)
// at acc + 16 * (q * ld_acc + r)) so K can be walked in blocks.
template <int P, int R>
QWEN35_AVX512 void pair_block(const float* xp, std::size_t pair_stride, const float* w, std::size_t K,
                              std::size_t steps, float* acc, std::size_t ld_acc) {
  __m512 a[P][R];
  for (int q = 0; q < P; ++q)
    for (int r = 0; r < R; ++r) a[q][r] = _mm512_load_ps(acc + 16 * (q * ld_acc + r));
  for (std::size_t s = 0; s < steps; ++s) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = both_halves(w + r * K + 8 * s);
    for (int q = 0; q < P; ++q) {
      const __m512 xv = _mm512_loadu_ps(xp + q * pair_stride + 16 * s);
      for (int r = 0; r < R; ++r) a[q][r] = _mm512_fmadd_ps(xv, wv[r], a[q][r]);
    }
  }
  for (int q = 0; q < P; ++q)
    for (int r = 0; r < R; ++r) _mm512_store_ps(acc + 16 * (q * ld_acc + r), a[q][r]);
}

// Eight accumulators (rows r..r+7 of one token pair) -> their 16 sums, [token 2p: rows | token
// 2p + 1: rows], with dot_fixed_order's combine ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
// done for all of them at once: three levels of "even lanes + odd lanes" of two registers.
QWEN35_AVX512 inline __m512 pairwise(__m512 x, __m512 y) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 16, 18, 20, 22, 8, 10, 12, 14, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 17, 19, 21, 23, 9, 11, 13, 15, 25, 27, 29, 31);
  return _mm512_add_ps(_mm512_permutex2var_ps(x, even, y), _mm512_permutex2var_ps(x, odd, y));
}
QWEN35_AVX512 inline __m512 finish8(const float* acc) {
  __m512 a[8];
  for (int r = 0; r < 8; ++r) a[r] = _mm512_load_ps(acc + 16 * r);
  return pairwise(pairwise(pairwise(a[0], a[1]), pairwise(a[2], a[3])),
                  pairwise(pairwise(a[4], a[5]), pairwise(a[6], a[7])));
}

template <int R>
QWEN35_AVX512 void pair_block_any(std::size_t pairs, const float* xp, std::size_t pair_stride, const float* w,
                                  std::size_t K, std::size_t steps, float* acc, std::size_t ld_acc) {
  switch (pairs) {
    case 4: pair_block<4, R>(xp, pair_stride, w, K, steps, acc, ld_acc); break;
    case 3: pair_block<3, R>(xp, pair_stride, w, K, steps, acc, ld_acc); break;
    case 2: pair_block<2, R>(xp, pair_stride, w, K, steps, acc, ld_acc); break;
    default: pair_block<1, R>(xp, pair_stride, w, K, steps, acc, ld_acc); break;
  }
}

// One token: two weight rows per register, lanes 0-7 row r and 8-15 row r + 1, each half the
// AVX2 accumulator of its row (the same lanes in the same order), decoded from the packed codes
// straight into registers: no row buffer, and no lanes spent on a missing second token.
QWEN35_AVX512 void gemv_rows512(const RowTask& t, std::size_t row, std::size_t end, float* out, float* buf) {
  const std::size_t K = t.K, blocks = K / kBlock;
  const float* e4m3 = e4m3_table();
  const __m512 table = _mm512_loadu_ps(e2m1_table());
  // k 0..7 and 8..15 of each row: low nibble of byte j is k = 2j, high nibble k = 2j + 1.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 8, 24, 9, 25, 10, 26, 11, 27);
  const __m512i second = _mm512_setr_epi32(4, 20, 5, 21, 6, 22, 7, 23, 12, 28, 13, 29, 14, 30, 15, 31);
  for (; row + 2 <= end; row += 2) {
    const uint8_t* p0 = t.packed + row * (K / 2);
    const uint8_t* p1 = p0 + K / 2;
    __m512 acc = _mm512_setzero_ps();
    for (std::size_t b = 0; b < blocks; ++b) {
      const __m512 s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(e4m3[t.scales[scale_offset(t.layout, row, b, blocks)]]),
                                            _mm512_set1_ps(e4m3[t.scales[scale_offset(t.layout, row + 1, b, blocks)]]));
      const __m128i two = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p0 + b * (kBlock / 2))),
                                             _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p1 + b * (kBlock / 2))));
      const Decoded512 d = decode16_bytes(_mm512_cvtepu8_epi32(two), s, table);
      acc = _mm512_fmadd_ps(_mm512_permutex2var_ps(d.lo, first, d.hi), both_halves(t.x + b * kBlock), acc);
      acc = _mm512_fmadd_ps(_mm512_permutex2var_ps(d.lo, second, d.hi), both_halves(t.x + b * kBlock + 8), acc);
    }
    // K is a multiple of 16 here: no tail for finish to add.
    out[row - t.first_row] = finish(_mm512_castps512_ps256(acc), t.x, nullptr, K, K);
    out[row + 1 - t.first_row] = finish(high_half(acc), t.x, nullptr, K, K);
  }
  if (row < end) {  // an odd last row, through the row buffer
    decode_row512(t, row, buf);
    dots<1, 1>(t.x, buf, K, out + (row - t.first_row), t.ld);
  }
}

}  // namespace

QWEN35_AVX512 void gemm_rows_avx512(const RowTask& t, float* buf) {
  // Token pairs in blocks small enough to stay in L2 (kPairBlockBytes); for each block, up to
  // kDecodeRows decoded rows against every pair of the block, K walked in blocks of
  // kStepsPerBlock k-steps so the rows' block (16 x 1 KiB) and four pairs' block (4 x 2 KiB) stay
  // in L1 while each is reused; four pairs x four rows of accumulators per inner loop. The
  // accumulators wait in `acc` between K blocks; lane order and FMA are as the AVX2 kernel's, so
  // the sums are the same bits. Rows are decoded once per pair block: for long prefills that is
  // a few percent of the work, against reading every token from L3 once per 16 rows.
  if (t.tokens == 1 && t.K % kBlock == 0) {
    gemv_rows512(t, t.row0, t.row0 + t.rows, t.sums, buf);
    return;
  }
  constexpr std::size_t kStepsPerBlock = 64;
  constexpr std::size_t kPairBlockBytes = std::size_t{1024} << 10;
  const std::size_t K = t.K, steps_total = K / 8, pairs = (t.tokens + 1) / 2, pair_stride = 2 * K;
  const std::size_t pair_block = std::max<std::size_t>(4, kPairBlockBytes / (pair_stride * sizeof(float)) / 4 * 4);
  thread_local std::vector<float> acc_storage;
  float* acc = aligned_floats(acc_storage, 16 * std::min(pairs, pair_block) * kDecodeRows);
  for (std::size_t pb = 0; pb < pairs; pb += pair_block) {
    const std::size_t npairs = std::min(pair_block, pairs - pb);
    for (std::size_t row = t.row0; row < t.row0 + t.rows; row += kDecodeRows) {
      const std::size_t nrows = std::min(kDecodeRows, t.row0 + t.rows - row);
      for (std::size_t r = 0; r < nrows; ++r) decode_row512(t, row + r, buf + r * K);
      std::fill(acc, acc + 16 * npairs * kDecodeRows, 0.0f);
      for (std::size_t s0 = 0; s0 < steps_total; s0 += kStepsPerBlock) {
        const std::size_t steps = std::min(kStepsPerBlock, steps_total - s0);
        for (std::size_t p = 0; p < npairs; p += 4) {
          const std::size_t np = std::min<std::size_t>(4, npairs - p);
          const float* xp = t.xp + (pb + p) * pair_stride + 16 * s0;
          float* a = acc + 16 * p * kDecodeRows;
          std::size_t r = 0;
          for (; r + 4 <= nrows; r += 4) {
            pair_block_any<4>(np, xp, pair_stride, buf + r * K + 8 * s0, K, steps, a + 16 * r, kDecodeRows);
          }
          for (; r < nrows; ++r) {
            pair_block_any<1>(np, xp, pair_stride, buf + r * K + 8 * s0, K, steps, a + 16 * r, kDecodeRows);
          }
        }
      }
      float* out = t.sums + (row - t.first_row);
      for (std::size_t p = 0; p < npairs; ++p) {
        const std::size_t m = 2 * (pb + p);
        const bool pair = m + 1 < t.tokens;
        std::size_t r = 0;
        if (K % 8 == 0) {  // no tail: all eight rows' sums at once
          for (; r + 8 <= nrows; r += 8) {
            const __m512 v = finish8(acc + 16 * (p * kDecodeRows + r));
            _mm256_storeu_ps(out + m * t.ld + r, _mm512_castps512_ps256(v));
            if (pair) _mm256_storeu_ps(out + (m + 1) * t.ld + r, high_half(v));
          }
        }
        for (; r < nrows; ++r) {
          const __m512 a = _mm512_load_ps(acc + 16 * (p * kDecodeRows + r));
          out[m * t.ld + r] = finish(_mm512_castps512_ps256(a), t.x + m * K, buf + r * K, 8 * steps_total, K);
          if (pair) {
            const __m256 hi = high_half(a);
            out[(m + 1) * t.ld + r] = finish(hi, t.x + (m + 1) * K, buf + r * K, 8 * steps_total, K);
          }
        }
      }
    }
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
