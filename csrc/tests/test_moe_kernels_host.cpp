// ctest, no GPU needed: the scalar code that the W4A16 CUDA kernel runs in registers, checked on
// the CPU for every input (E2M1 -> BF16 by byte permutes, FP8 -> BF16, exactness of their product,
// the 2^120-scaled pair the GEMM's k-loop uses, and the W4A16 fragment layout: its codec and the
// shift-and-mask decode of its words and UE5M3 scales).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

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

// --- the W4A16 fragment layout -------------------------------------------------------------------

// bf16 bits of code x 2^-126 (code 8: -0.0), the value a decoded fragment pair holds.
uint16_t e2m1_bf16_x2m126(uint32_t code) {
  if (code == 8) return 0x8000;
  return fp4::float_to_bf16(std::ldexp(fp4::decode_e2m1(static_cast<uint8_t>(code)), -126));
}

// Every bit of a fragment word belongs to exactly one code bit, so pack/unpack are inverses.
void test_fragment_bits_partition() {
  uint32_t seen = 0;
  int count = 0;
  for (const auto& pair : fp4::kPairBits)
    for (const auto& code : pair)
      for (int bit : code) {
        CHECK_MSG((seen >> bit & 1u) == 0, "fragment bit " + std::to_string(bit) + " used twice");
        seen |= 1u << bit;
        ++count;
      }
  CHECK(seen == 0xFFFFFFFFu && count == 32);
}

// Each pair decoder against a pair written at its kPairBits positions, for every value of the pair
// under random surrounding bits, and the ModelOpt-order pair decoder for every byte.
void test_fragment_pairs_all_inputs() {
  std::mt19937 rng(7);
  std::size_t bad = 0;
  for (int p = 0; p < 4; ++p) {
    for (uint32_t v = 0; v < 256; ++v) {
      uint32_t w = rng();
      for (int i = 0; i < 2; ++i)
        for (int bit = 0; bit < 4; ++bit) {
          const uint32_t b = (v >> (4 * i + bit)) & 1u;
          w = (w & ~(1u << fp4::kPairBits[p][i][bit])) | (b << fp4::kPairBits[p][i][bit]);
        }
      const uint32_t want = e2m1_bf16_x2m126(v & 0xF) | (static_cast<uint32_t>(e2m1_bf16_x2m126(v >> 4)) << 16);
      bad += kn::e2m1_fragment_pair_x2m126(w, p) != want;
      if (p == 0) bad += kn::e2m1x2_to_bf16x2_x2m126(v) != want;
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " fragment pairs decode wrongly");
}

// UE5M3 <-> E4M3 for every E4M3 code, the kernel's UE5M3 -> bf16 x 2^119 in every byte position,
// and the product the k-loop forms (code x 2^-126 times scale x 2^119, in bf16) against code x
// scale x 2^-7 for every code and every valid scale: exact, so 2^7 in the epilogue restores it.
void test_ue5m3_scales_and_products() {
  std::size_t bad = 0;
  for (int b = 0; b < 256; ++b) {
    const uint8_t u = fp4::e4m3_to_ue5m3(static_cast<uint8_t>(b));
    const bool invalid = ((b & 0x80) && (b & 0x7F)) || (b & 0x7F) == 0x7F;
    if (invalid) {
      bad += u != fp4::kUe5m3Invalid;
      continue;
    }
    bad += fp4::ue5m3_to_e4m3(u) != (b & 0x7F);
    const float scale = fp4::decode_e4m3(static_cast<uint8_t>(b & 0x7F));
    for (int j = 0; j < 4; ++j) {
      uint32_t even = 0, odd = 0;
      kn::ue5m3x4_to_bf16x4_x2p119((static_cast<uint32_t>(u) << (8 * j)) | (0x5A5A5A5Au & ~(0xFFu << (8 * j))), even, odd);
      const uint32_t pair = j % 2 ? odd : even;
      const uint16_t got = static_cast<uint16_t>(j >= 2 ? pair >> 16 : pair & 0xFFFFu);
      if (u == 0) {
        bad += got != (fp4::kUe5m3Bf16Bias << 7);  // 2^109, times zero codes only
        continue;
      }
      bad += fp4::bf16_to_float(got) != std::ldexp(scale, 119);
    }
    uint32_t even = 0, odd = 0;
    kn::ue5m3x4_to_bf16x4_x2p119(u, even, odd);
    const float sf = fp4::bf16_to_float(static_cast<uint16_t>(even));
    for (uint32_t c = 0; c < 16; ++c) {
      const float got = fp4::bf16_to_float(fp4::float_to_bf16(fp4::bf16_to_float(e2m1_bf16_x2m126(c)) * sf));
      const float want = u == 0 ? 0.0f : std::ldexp(fp4::decode_e2m1(static_cast<uint8_t>(c)) * scale, -7);
      bad += u == 0 ? (c % 8 == 0 ? got != 0.0f : false) : got != want;
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " UE5M3 conversions or fragment products differ");
}

// pack_fragment_row / unpack_fragment_row: round trip for full and partial groups, zero-scale
// blocks stored with zero codes, negative and NaN scales refused with their block.
void test_fragment_rows() {
  std::mt19937 rng(11);
  for (std::size_t k : {16u, 32u, 48u, 64u, 80u, 96u, 176u, 2048u}) {
    std::vector<uint8_t> codes(k / 2), scales(k / 16), fc(k / 2), fs(k / 16), back(k / 2), back_s(k / 16);
    for (auto& b : codes) b = static_cast<uint8_t>(rng());
    for (auto& s : scales) s = static_cast<uint8_t>(1 + rng() % 0x7E);  // positive, subnormals included
    scales[0] = 0x00;
    std::size_t bad_block = 99;
    CHECK(fp4::pack_fragment_row(codes.data(), scales.data(), k, fc.data(), fs.data(), &bad_block));
    fp4::unpack_fragment_row(fc.data(), fs.data(), k, back.data(), back_s.data());
    std::size_t bad = 0;
    for (std::size_t i = 0; i < k / 2; ++i) bad += back[i] != (i < 8 ? 0 : codes[i]);  // block 0: zero scale
    for (std::size_t b = 0; b < k / 16; ++b) bad += back_s[b] != scales[b];
    // Full groups are permuted (the row codec's tables against the bit-level definition): word
    // (q, h) of lane q holds its codes 16 ks + 2 q (+1, +8, +9) of k-steps 2 h, 2 h + 1.
    for (std::size_t g = 0; g < k / 64; ++g) {
      for (int q = 0; q < 4; ++q) {
        for (int h = 0; h < 2; ++h) {
          const uint8_t* p = &fc[32 * g + 8 * q + 4 * h];
          const uint32_t w = p[0] | p[1] << 8 | p[2] << 16 | static_cast<uint32_t>(p[3]) << 24;
          bad += w != fp4::pack_fragment_word(&back[32 * g], q, h);
        }
      }
    }
    CHECK_MSG(bad == 0, "fragment row round trip k=" + std::to_string(k) + ": " + std::to_string(bad) + " bytes differ");
    scales[k / 16 - 1] = 0xB8;  // -1.0
    CHECK(!fp4::pack_fragment_row(codes.data(), scales.data(), k, fc.data(), fs.data(), &bad_block));
    CHECK(bad_block == k / 16 - 1);
    scales[k / 16 - 1] = 0x7F;  // NaN
    CHECK(!fp4::pack_fragment_row(codes.data(), scales.data(), k, fc.data(), fs.data(), &bad_block));
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
  test_fragment_bits_partition();
  test_fragment_pairs_all_inputs();
  test_ue5m3_scales_and_products();
  test_fragment_rows();
  return qwen35_trt::test::report();
}
