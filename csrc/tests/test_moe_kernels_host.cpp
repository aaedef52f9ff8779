// ctest, no GPU needed: the scalar code that the W4A16 CUDA kernel runs in registers, checked on
// the CPU for every input (E2M1 -> BF16 by byte permutes, FP8 -> BF16, exactness of their product).
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
  test_scale_offsets();
  return qwen35_trt::test::report();
}
