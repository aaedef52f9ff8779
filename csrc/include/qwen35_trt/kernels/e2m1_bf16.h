// Register-level NVFP4 -> BF16 conversion used by the W4A16 GEMM (see grouped_gemm_w4a16_mma.cu).
// Host and device code share these functions, so the bit tricks are tested exhaustively on the
// CPU (csrc/tests/test_moe_kernels_host.cpp) even where no GPU is available.
//
// An E2M1 magnitude index i (0..7) maps to the bf16 bits of [0, 0.5, 1, 1.5, 2, 3, 4, 6]; the high
// and low bytes of those 8 values form two 8-byte tables that one PRMT (byte permute) each looks up
// for 4 nibbles at once; two more PRMTs interleave them into bf16 pairs, and the sign bits are
// moved into place. Products e2m1 * fp8 scale are exact in bf16 (2 x 4 significant bits).
//
// The GEMM's hot loop uses the scaled pair (e2m1x4_to_bf16x4_x120, e4m3x4_to_bf16x4_x2m120): an
// E4M3 code's exponent and mantissa bits, shifted into a bf16, are its value times 2^-120
// (subnormals included, as bf16 subnormals), so with the E2M1 table raised by 2^120 one bf16
// multiply gives the same exact product as e2m1x4_to_bf16x4 times e4m3_to_bf16 without any
// float decoding. This relies on bf16 multiplies keeping subnormal inputs (PTX mul/fma .bf16x2
// have no flush-to-zero mode).
#pragma once

#include <cstdint>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/nvfp4_codec.h"  // decode_e4m3, float_to_bf16
#include "qwen35_trt/common/w4a16_fragments.h"

namespace qwen35_trt::kernels {

// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8-byte value {y:x}.
QWEN35_HD uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (s >> (4 * i)) & 7u;
    r |= static_cast<uint32_t>((v >> (8 * sel)) & 0xFFu) << (8 * i);
  }
  return r;
#endif
}

// prmt.b32 in its generic mode, with the sign replication that __byte_perm does not document:
// byte i of the result is byte (s >> 4i) & 7 of {y:x}, or, when bit 4i + 3 of s is set, that
// byte's msb copied into all 8 bits.
QWEN35_HD uint32_t byte_perm_sx(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(x), "r"(y), "r"(s));
  return r;
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (s >> (4 * i)) & 0xFu;
    uint32_t b = static_cast<uint32_t>((v >> (8 * (sel & 7u))) & 0xFFu);
    if (sel & 8u) b = (b & 0x80u) ? 0xFFu : 0x00u;
    r |= b << (8 * i);
  }
  return r;
#endif
}

// Low / high bytes of the bf16 bits of the 8 E2M1 magnitudes, as {y:x} tables for byte_perm.
inline constexpr uint32_t kE2M1Bf16LoX = 0xC0800000u;  // indices 0..3: 0x00 0x00 0x80 0xC0
inline constexpr uint32_t kE2M1Bf16LoY = 0xC0804000u;  // indices 4..7: 0x00 0x40 0x80 0xC0
inline constexpr uint32_t kE2M1Bf16HiX = 0x3F3F3F00u;  // indices 0..3: 0x00 0x3F 0x3F 0x3F
inline constexpr uint32_t kE2M1Bf16HiY = 0x40404040u;  // indices 4..7: 0x40 0x40 0x40 0x40

// Four E2M1 codes in the low 16 bits of `v` (nibble j = code j) -> bf16 pairs:
// lo = (code0 | code1 << 16), hi = (code2 | code3 << 16) as bf16 bit patterns. Code 8 (negative
// zero) gives -0.0, which multiplies and accumulates exactly like +0.0.
QWEN35_HD void e2m1x4_to_bf16x4(uint32_t v, uint32_t& lo, uint32_t& hi) {
  const uint32_t idx = v & 0x7777u;
  const uint32_t low_bytes = byte_perm(kE2M1Bf16LoX, kE2M1Bf16LoY, idx);
  const uint32_t high_bytes = byte_perm(kE2M1Bf16HiX, kE2M1Bf16HiY, idx);
  lo = byte_perm(low_bytes, high_bytes, 0x5140u);  // [lo0 hi0 lo1 hi1]
  hi = byte_perm(low_bytes, high_bytes, 0x7362u);  // [lo2 hi2 lo3 hi3]
  lo |= ((v & 0x0008u) << 12) | ((v & 0x0080u) << 24);
  hi |= ((v & 0x0800u) << 4) | ((v & 0x8000u) << 16);
}

// float8_e4m3fn bits -> bfloat16 bits (exact for every finite value; NaN stays NaN).
QWEN35_HD uint16_t e4m3_to_bf16(uint8_t b) { return nvfp4::float_to_bf16(nvfp4::decode_e4m3(b)); }

// High bytes of the bf16 bits of the 8 E2M1 magnitudes times 2^120 (the low bytes are those of
// kE2M1Bf16LoX / LoY): 0, 0.5, 1, 1.5 -> 0x00 0x7B 0x7B 0x7B; 2, 3, 4, 6 -> 0x7C.
inline constexpr uint32_t kE2M1x120Bf16HiX = 0x7B7B7B00u;
inline constexpr uint32_t kE2M1x120Bf16HiY = 0x7C7C7C7Cu;

// As e2m1x4_to_bf16x4, of the codes times 2^120 (exact: a power-of-two shift of the exponent).
// The signs go into the high bytes before the interleave: the msb of byte j of `signs` is code
// j's sign bit (codes 0 and 2 from the bytes of v << 4, codes 1 and 3 from those of v).
QWEN35_HD void e2m1x4_to_bf16x4_x120(uint32_t v, uint32_t& lo, uint32_t& hi) {
  const uint32_t idx = v & 0x7777u;
  const uint32_t low_bytes = byte_perm(kE2M1Bf16LoX, kE2M1Bf16LoY, idx);
  const uint32_t signs = byte_perm(v << 4, v, 0x5140u);
  const uint32_t high_bytes = byte_perm(kE2M1x120Bf16HiX, kE2M1x120Bf16HiY, idx) | (signs & 0x80808080u);
  lo = byte_perm(low_bytes, high_bytes, 0x5140u);  // [lo0 hi0 lo1 hi1]
  hi = byte_perm(low_bytes, high_bytes, 0x7362u);  // [lo2 hi2 lo3 hi3]
}

// Four float8_e4m3fn codes (byte j = code j) -> bf16 bits of code_j * 2^-120, as the pairs
// even = (code 0 | code 2 << 16) and odd = (code 1 | code 3 << 16): the sign to bit 15 and the
// 7 exponent and mantissa bits to bits 4..10 of each half, so the e4m3 exponent field becomes the
// bf16 one (bias 7 vs 127) and an e4m3 subnormal a bf16 subnormal; exact for every finite code.
// NaN (0x7F, 0xFF) stays NaN: adding 1 to the 7 low bits carries into the byte's msb only for
// them, and a sign-replicating permute turns that bit into an all-ones high byte.
QWEN35_HD void e4m3x4_to_bf16x4_x2m120(uint32_t s, uint32_t& even, uint32_t& odd) {
  const uint32_t nan = (s & 0x7F7F7F7Fu) + 0x01010101u;
  even = ((s << 4) & 0x07F007F0u) | ((s << 8) & 0x80008000u) | byte_perm_sx(nan, 0u, 0xA484u);
  odd = ((s >> 4) & 0x07F007F0u) | (s & 0x80008000u) | byte_perm_sx(nan, 0u, 0xB494u);
}

// --- the W4A16 fragment layout (qwen35_trt/common/w4a16_fragments.h) ---------------------------

// Pair p (0..3, a constant after unrolling) of a fragment word -> bf16x2 of its two codes times
// 2^-126: the codes' bits land on the bf16 sign, exponent-low and mantissa-high bits, so a zero
// exponent becomes a bf16 subnormal and code 8 (negative zero) -0.0. Pair 0 is in place, pairs 1
// and 2 one shift away, pair 3 three.
QWEN35_HD uint32_t e2m1_fragment_pair_x2m126(uint32_t w, int p) {
  constexpr uint32_t kPlaced = 0x81C081C0u;  // bits 6, 7, 8, 15 of each half
  if (p == 0) return w & kPlaced;
  if (p == 1) return (w << 3) & kPlaced;
  if (p == 2) return (w << 6) & kPlaced;
  return ((w >> 4) & 0x00C000C0u) | ((w >> 5) & 0x01000100u) | ((w << 1) & 0x80008000u);
}

// Two E2M1 codes in ModelOpt order (the low byte of `v`: code 0 in the low nibble) -> the same
// bf16x2 as a fragment pair (the partial group at the end of a row of the fragment layout).
QWEN35_HD uint32_t e2m1x2_to_bf16x2_x2m126(uint32_t v) {
  return ((v & 0x7u) << 6) | ((v & 0x8u) << 12) | ((v & 0x70u) << 18) | ((v & 0x80u) << 24);
}

// Four UE5M3 scales (byte j = k-step j of a row's stage) -> bf16 bits of scale_j x 2^119 as the
// pairs even = (0 | 2 << 16) and odd = (1 | 3 << 16): the 8 bits shifted onto the bf16 exponent
// and mantissa, plus the exponent bias difference. A zero scale gives 2^109, harmless: the
// builder writes zero codes for a zero-scale block, and code x 2^-126 x 2^109 stays exactly 0.
QWEN35_HD void ue5m3x4_to_bf16x4_x2p119(uint32_t s, uint32_t& even, uint32_t& odd) {
  constexpr uint32_t kBias = (nvfp4::kUe5m3Bf16Bias << 7) * 0x10001u;
  even = ((s << 4) & 0x0FF00FF0u) + kBias;
  odd = ((s >> 4) & 0x0FF00FF0u) + kBias;
}

}  // namespace qwen35_trt::kernels
