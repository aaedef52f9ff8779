// NVFP4 scalar codec, shared by the CPU reference (qwen35_trt/nvfp4.h) and the CUDA kernels:
// bit-exact with ModelOpt's NVFP4 weight format.
//
// Format (ModelOpt `NVFP4QTensor`, group size 16), for a weight W of shape [rows, cols]:
//   packed  uint8  [rows, cols / 2]   two E2M1 codes per byte; the LOW nibble holds the even
//                                     column (2j), the high nibble the odd column (2j + 1).
//   scales  uint8  [rows, cols / 16]  FP8 E4M3 (float8_e4m3fn) bit patterns, one per block of 16
//                                     consecutive columns, row-major, not swizzled.
//   weight_scale_2  float32 scalar    the global scale, amax(W) / (6 * 448) for a fresh export.
//   W[o, i] = e2m1(code[o, i]) * (float(scales[o, i / 16]) * weight_scale_2)
//
// E2M1 code: bit 3 is the sign, bits 2..0 index the magnitudes [0, 0.5, 1, 1.5, 2, 3, 4, 6].
// E4M3 (float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; 0x7F and
// 0xFF are NaN; largest finite 448; subnormals are multiples of 2^-9.
//
// Every function here is host and device code (QWEN35_HD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qwen35_trt/common/host_device.h"

namespace qwen35_trt::nvfp4 {

inline constexpr int kBlockSize = 16;         // elements per FP8 block scale
inline constexpr float kE2M1Max = 6.0f;       // largest E2M1 magnitude
inline constexpr float kE4M3Max = 448.0f;     // largest finite float8_e4m3fn
inline constexpr float kScaleMin = 0.001953125f;  // 2^-9, ModelOpt's lower clamp of block scales
inline constexpr uint8_t kE4M3NaN = 0x7F;
inline constexpr uint8_t kE4M3MaxBits = 0x7E;  // 448

// ---------------------------------------------------------------------------------------------
// Scalar codecs (host and device).

QWEN35_HD uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

QWEN35_HD float float_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// Magnitude of E2M1 code & 7, signed by bit 3; only the low nibble of `code` is read. Code 8
// (negative zero) decodes to +0.0, as in ModelOpt's value table. Built from bits rather than a
// table lookup so that device code keeps it in registers.
QWEN35_HD float decode_e2m1(uint8_t code) {
  const uint32_t i = code & 7u;
  if (i == 0) return 0.0f;
  // i = 1 is 0.5; i >= 2 is (1 + (i & 1) / 2) * 2^((i >> 1) - 1).
  const uint32_t magnitude = i == 1 ? (126u << 23) : ((126u + (i >> 1)) << 23) | ((i & 1u) << 22);
  return float_from_bits(magnitude | (static_cast<uint32_t>(code & 8u) << 28));
}

// E2M1 encode with ModelOpt's rounding (`NVFP4QTensor._cast_fp4`): round to nearest, ties to
// the even code index (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4),
// magnitudes above 6 (and +-inf, NaN) saturate to 6. The sign bit is set when x < 0, so -0.0
// gives code 0 but a small negative value that rounds to zero gives code 8 (negative zero).
QWEN35_HD uint8_t encode_e2m1(float x) {
  const uint8_t sign = x < 0.0f ? 8 : 0;
  const float a = x < 0.0f ? -x : x;
  if (!(a == a)) return static_cast<uint8_t>(sign | 7);  // NaN sorts last in searchsorted
  uint8_t idx = static_cast<uint8_t>((a > 0.25f) + (a > 0.75f) + (a > 1.25f) + (a > 1.75f) +
                                     (a > 2.5f) + (a > 3.5f) + (a > 5.0f));
  idx = static_cast<uint8_t>(idx + (a == 0.75f || a == 1.75f || a == 3.5f));
  return static_cast<uint8_t>(sign | idx);
}

// float8_e4m3fn bits -> float (exact; 0x7F / 0xFF -> NaN).
QWEN35_HD float decode_e4m3(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80) << 24;
  const uint32_t exp = (b >> 3) & 0xF;
  const uint32_t man = b & 0x7;
  if (exp == 0xF && man == 0x7) return float_from_bits(sign | 0x7FC00000u);
  if (exp == 0) {
    const float m = static_cast<float>(man) * 0.001953125f;  // man * 2^-9, exact
    return sign ? -m : m;
  }
  return float_from_bits(sign | ((exp + 120u) << 23) | (man << 20));
}

// Round-half-to-even right shift of a non-negative integer by 1..31 bits.
QWEN35_HD uint32_t shift_right_rne(uint32_t v, uint32_t shift) {
  if (shift >= 32) return 0;
  const uint32_t q = v >> shift;
  const uint32_t rem = v & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
}

// float -> float8_e4m3fn bits, round to nearest even, matching torch 2.13's
// `.to(torch.float8_e4m3fn)` for every input: magnitudes that round above 448, and +-inf,
// saturate to +-448 (0x7E / 0xFE); NaN gives 0x7F with the input's sign bit; -0.0 gives 0x80.
QWEN35_HD uint8_t encode_e4m3(float x) {
  const uint32_t bits = float_bits(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const uint32_t a = bits & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | kE4M3NaN);
  const uint32_t exp = a >> 23;
  uint32_t r;
  if (exp < 121) {
    // Below 2^-6 the result is a subnormal (or the smallest normal after rounding):
    // a count of 2^-9 units, RNE(significand * 2^(exp - 141)).
    if (exp == 0) return sign;  // fp32 zero or subnormal, far below 2^-10
    const uint32_t significand = (a & 0x7FFFFFu) | 0x800000u;
    r = shift_right_rne(significand, 141u - exp);
  } else {
    // Rebias the exponent (127 -> 7) and round the 23-bit mantissa to 3 bits; a carry out of
    // the mantissa correctly bumps the exponent.
    r = shift_right_rne(a - (120u << 23), 20);
    if (r > kE4M3MaxBits) r = kE4M3MaxBits;
  }
  return static_cast<uint8_t>(sign | r);
}

QWEN35_HD float bf16_to_float(uint16_t b) { return float_from_bits(static_cast<uint32_t>(b) << 16); }

// float -> bfloat16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`); NaN -> 0x7FC0.
QWEN35_HD uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// ModelOpt's fresh-export global scale: amax / (6 * 448) in fp32.
QWEN35_HD float weight_scale_2_from_amax(float amax) { return amax / (kE2M1Max * kE4M3Max); }

// Byte offset of scale (m, k) in the 128x4-swizzled layout that sm_100 block-scaled MMA reads.
// cols_padded = roundup(cols, 4). Tiles of 128 rows x 4 columns take 512 contiguous bytes,
// ordered tile-row-major; inside a tile, row m sits at (m % 32) * 16 + ((m % 128) / 32) * 4.
QWEN35_HD std::size_t swizzle_offset_128x4(std::size_t m, std::size_t k, std::size_t cols_padded) {
  return ((m / 128) * (cols_padded / 4) + k / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 +
         (k % 4);
}

QWEN35_HD std::size_t round_up(std::size_t x, std::size_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

}  // namespace qwen35_trt::nvfp4
