// Register-level NVFP4 -> BF16 conversion used by the W4A16 GEMM (see grouped_gemm_w4a16_mma.cu).
// Host and device code share these functions, so the bit tricks are tested exhaustively on the
// CPU (csrc/tests/test_moe_kernels_host.cpp) even where no GPU is available.
//
// An E2M1 magnitude index i (0..7) maps to the bf16 bits of [0, 0.5, 1, 1.5, 2, 3, 4, 6]; the high
// and low bytes of those 8 values form two 8-byte tables that one PRMT (byte permute) each looks up
// for 4 nibbles at once; two more PRMTs interleave them into bf16 pairs, and the sign bits are
// moved into place. Products e2m1 * fp8 scale are exact in bf16 (2 x 4 significant bits).
#pragma once

#include <cstdint>

#include "qwen35_trt/common/host_device.h"
#include "qwen35_trt/common/nvfp4_codec.h"  // decode_e4m3, float_to_bf16

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

}  // namespace qwen35_trt::kernels
