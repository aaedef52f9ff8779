// ctest, no GPU needed: the scalar code that the W4A16 CUDA kernel runs in registers, checked on
// the CPU for every input (E2M1 -> BF16 by byte permutes, FP8 -> BF16, exactness of their product,
// and the 2^120-scaled pair the GEMM's k-loop uses).
#include <cmath>
#include <cstdint>
#include <string>

#include "check.h"
#include "qwen35_trt/kernels/e2m1_bf16.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/nvfp4.h"

namespace fp4 = qwen35_trt::nvfp4;
namespace kn = qwen35_trt::kernels;
namespace mo = qwen35_trt::moe;

namespace {

// bf16 bits of decode_e2m1, except that code 8 is -0.0 here (the sign bit is copied as is).
uint16_t e2m1_bf16(uint32_t code) {
  if (code == 8) return 0x8000;
  return fp4::float_to_bf16(fp4::decode_e2m1(static_cast<uint8_t>(code)));
}

void test_e2m1x4_all_inputs() {
  std::size_t bad = 0;
  for (uint32_t v = 0; v < 65536; ++v) {
    uint32_t lo = 0, hi = 0;
    kn::e2m1x4_to_bf16x4(v | 0xABCD0000u, lo, hi);  // upper bits must be ignored
    const uint32_t want_lo = e2m1_bf16(v & 0xF) | (static_cast<uint32_t>(e2m1_bf16((v >> 4) & 0xF)) << 16);
    const uint32_t want_hi = e2m1_bf16((v >> 8) & 0xF) | (static_cast<uint32_t>(e2m1_bf16(v >> 12)) << 16);
    bad += lo != want_lo || hi != want_hi;
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " of 65536 inputs decode wrongly");
}

void test_scale_products_exact() {
  std::size_t bad = 0;
  for (int s = 0; s < 256; ++s) {
    if ((s & 0x7F) == 0x7F) continue;  // NaN
    const uint16_t sf = kn::e4m3_to_bf16(static_cast<uint8_t>(s));
    bad += fp4::bf16_to_float(sf) != fp4::decode_e4m3(static_cast<uint8_t>(s));
    for (int c = 0; c < 16; ++c) {
      const float prod = fp4::decode_e2m1(static_cast<uint8_t>(c)) * fp4::bf16_to_float(sf);
      bad += fp4::bf16_to_float(fp4::float_to_bf16(prod)) != prod;  // representable in bf16
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " scale conversions or products are inexact");
}

// bf16 bits of x * 2^e (exact for the powers used here: no rounding, no overflow).
uint16_t bf16_scaled(uint16_t x, int e) {
  return fp4::float_to_bf16(fp4::bf16_to_float(x) * std::ldexp(1.0f, e));
}

void test_byte_perm_sx() {
  std::size_t bad = 0;
  const uint32_t x = 0x80FF7F01u, y = 0x00C04080u;
  for (uint32_t s = 0; s < 65536; ++s) {
    const uint32_t r = kn::byte_perm_sx(x, y, s);
    for (int i = 0; i < 4; ++i) {
      const uint32_t sel = (s >> (4 * i)) & 0xFu;
      const uint32_t b = static_cast<uint32_t>(((static_cast<uint64_t>(y) << 32 | x) >> (8 * (sel & 7u))) & 0xFFu);
      const uint32_t want = (sel & 8u) ? ((b & 0x80u) ? 0xFFu : 0u) : b;
      bad += ((r >> (8 * i)) & 0xFFu) != want;
    }
    if ((s & 0x8888u) == 0) bad += r != kn::byte_perm(x, y, s);
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " byte_perm_sx bytes wrong");
}

// e2m1x4_to_bf16x4_x120 is e2m1x4_to_bf16x4 times 2^120, bit for bit (signed zeros included).
void test_e2m1x4_x120_all_inputs() {
  std::size_t bad = 0;
  for (uint32_t v = 0; v < 65536; ++v) {
    uint32_t lo = 0, hi = 0, lo1 = 0, hi1 = 0;
    kn::e2m1x4_to_bf16x4_x120(v | 0xABCD0000u, lo, hi);  // upper bits must be ignored
    kn::e2m1x4_to_bf16x4(v, lo1, hi1);
    for (int h = 0; h < 2; ++h) {
      bad += ((lo >> (16 * h)) & 0xFFFFu) != bf16_scaled(static_cast<uint16_t>(lo1 >> (16 * h)), 120);
      bad += ((hi >> (16 * h)) & 0xFFFFu) != bf16_scaled(static_cast<uint16_t>(hi1 >> (16 * h)), 120);
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " of 65536 scaled E2M1 inputs decode wrongly");
}

// e4m3x4_to_bf16x4_x2m120 against e4m3_to_bf16 for every code in every byte position (the other
// bytes cycling through all codes too), and the products the GEMM forms from both conversions
// against the unscaled ones: the same bf16 bits for every E2M1 code and every non-NaN scale, NaN
// for the NaN scales.
void test_e4m3x4_x2m120_all_inputs() {
  std::size_t bad = 0;
  for (uint32_t a = 0; a < 256; ++a) {
    for (uint32_t b = 0; b < 256; ++b) {
      const uint32_t s = a | (b << 8) | (((a + 77u) & 0xFFu) << 16) | (((b * 13u + 5u) & 0xFFu) << 24);
      uint32_t even = 0, odd = 0;
      kn::e4m3x4_to_bf16x4_x2m120(s, even, odd);
      const uint16_t got[4] = {static_cast<uint16_t>(even), static_cast<uint16_t>(odd),
                               static_cast<uint16_t>(even >> 16), static_cast<uint16_t>(odd >> 16)};
      for (int j = 0; j < 4; ++j) {
        const uint8_t code = static_cast<uint8_t>(s >> (8 * j));
        if ((code & 0x7F) == 0x7F) {
          bad += !std::isnan(fp4::bf16_to_float(got[j]));
        } else {
          bad += bf16_scaled(got[j], 120) != kn::e4m3_to_bf16(code);
        }
      }
    }
  }
  for (uint32_t sc = 0; sc < 256; ++sc) {
    uint32_t even = 0, odd = 0;
    kn::e4m3x4_to_bf16x4_x2m120(sc * 0x01010101u, even, odd);
    const float x = fp4::bf16_to_float(static_cast<uint16_t>(even));
    const float sf = fp4::bf16_to_float(kn::e4m3_to_bf16(static_cast<uint8_t>(sc)));
    for (uint32_t c = 0; c < 16; ++c) {
      uint32_t lo = 0, hi = 0, lo1 = 0, hi1 = 0;
      kn::e2m1x4_to_bf16x4_x120(c, lo, hi);
      kn::e2m1x4_to_bf16x4(c, lo1, hi1);
      const uint16_t got = fp4::float_to_bf16(fp4::bf16_to_float(static_cast<uint16_t>(lo)) * x);
      const uint16_t want = fp4::float_to_bf16(fp4::bf16_to_float(static_cast<uint16_t>(lo1)) * sf);
      bad += (sc & 0x7F) == 0x7F ? !std::isnan(fp4::bf16_to_float(got)) : got != want;
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " scaled E4M3 conversions or products differ");
}

void test_scale_offsets() {
  for (std::size_t rows : {1u, 130u}) {
    for (std::size_t cols : {16u, 48u, 2048u}) {
      const std::size_t blocks = cols / 16;
      for (std::size_t r = 0; r < rows; r += 7) {
        for (std::size_t b = 0; b < blocks; ++b) {
          CHECK(mo::scale_offset(mo::ScaleLayout::kRowMajor, r, b, blocks) == r * blocks + b);
          CHECK(mo::scale_offset(mo::ScaleLayout::kSwizzled128x4, r, b, blocks) ==
                fp4::swizzle_offset_128x4(r, b, fp4::round_up(blocks, 4)));
        }
      }
      CHECK(mo::scale_bytes(mo::ScaleLayout::kSwizzled128x4, rows, cols) ==
            fp4::round_up(rows, 128) * fp4::round_up(blocks, 4));
    }
  }
}

}  // namespace

int main() {
  test_e2m1x4_all_inputs();
  test_scale_products_exact();
  test_byte_perm_sx();
  test_e2m1x4_x120_all_inputs();
  test_e4m3x4_x2m120_all_inputs();
  test_scale_offsets();
  return qwen35_trt::test::report();
}
