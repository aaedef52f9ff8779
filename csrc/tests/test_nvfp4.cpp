// ctest for the NVFP4 codec CPU reference (qwen35_trt/nvfp4.h). Bit-exactness against ModelOpt
// itself is tested in tests/test_nvfp4_codec.py; this file checks the rules from first
// principles: code tables, ties, saturation, layouts and argument validation.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "qwen35_trt/nvfp4.h"

namespace fp4 = qwen35_trt::nvfp4;
using qwen35_trt::Span;

namespace {

const double kE2M1Magnitudes[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

bool same_bits(float a, float b) { return fp4::float_bits(a) == fp4::float_bits(b); }

// Independent E2M1 rounding: nearest magnitude in double, ties to the even index.
uint8_t e2m1_nearest(float x) {
  const double a = std::fabs(static_cast<double>(x));
  int best = 7;
  if (!(a >= 6.0)) {
    best = 0;
    for (int i = 1; i < 8; ++i) {
      const double d = std::fabs(a - kE2M1Magnitudes[i]);
      const double db = std::fabs(a - kE2M1Magnitudes[best]);
      if (d < db || (d == db && i % 2 == 0)) best = i;
    }
  }
  return static_cast<uint8_t>((x < 0.0f ? 8 : 0) | best);
}

// float8_e4m3fn by its definition, in double.
double e4m3_formula(int b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

void test_e2m1_codes() {
  for (int c = 0; c < 16; ++c) {
    const double expected = (c & 8 ? -1.0 : 1.0) * kE2M1Magnitudes[c & 7];
    const float v = fp4::decode_e2m1(static_cast<uint8_t>(c));
    CHECK_MSG(v == expected, "code " + std::to_string(c));
    // Every code but negative zero round-trips; code 8 decodes to +0.0 (ModelOpt's table).
    CHECK_MSG(fp4::encode_e2m1(v) == (c == 8 ? 0 : c), "round trip of code " + std::to_string(c));
  }
  CHECK(same_bits(fp4::decode_e2m1(8), 0.0f));
  CHECK(fp4::decode_e2m1(0xF7) == 6.0f);  // only the low nibble is read
  CHECK(fp4::decode_e2m1(0x7F) == -6.0f);
}

void test_e2m1_rounding() {
  // Ties go to the even code index.
  const float ties[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  const uint8_t tie_codes[7] = {0, 2, 2, 4, 4, 6, 6};
  for (int i = 0; i < 7; ++i) {
    CHECK_MSG(fp4::encode_e2m1(ties[i]) == tie_codes[i], "tie " + std::to_string(ties[i]));
    CHECK_MSG(fp4::encode_e2m1(-ties[i]) == (8 | tie_codes[i]), "tie -" + std::to_string(ties[i]));
    const float below = std::nextafter(ties[i], 0.0f);
    const float above = std::nextafter(ties[i], 10.0f);
    CHECK_MSG(fp4::encode_e2m1(below) == e2m1_nearest(below), "below " + std::to_string(ties[i]));
    CHECK_MSG(fp4::encode_e2m1(above) == e2m1_nearest(above), "above " + std::to_string(ties[i]));
    CHECK(fp4::encode_e2m1(above) == fp4::encode_e2m1(below) + 1);
  }
  // Saturation and signs.
  CHECK(fp4::encode_e2m1(6.0f) == 7);
  CHECK(fp4::encode_e2m1(6.5f) == 7);
  CHECK(fp4::encode_e2m1(1e30f) == 7);
  CHECK(fp4::encode_e2m1(std::numeric_limits<float>::infinity()) == 7);
  CHECK(fp4::encode_e2m1(-std::numeric_limits<float>::infinity()) == 15);
  CHECK(fp4::encode_e2m1(std::numeric_limits<float>::quiet_NaN()) == 7);
  CHECK(fp4::encode_e2m1(0.0f) == 0);
  CHECK(fp4::encode_e2m1(-0.0f) == 0);
  CHECK(fp4::encode_e2m1(-0.1f) == 8);  // negative values that round to zero keep the sign bit
  CHECK(fp4::encode_e2m1(-1e-30f) == 8);
  // Random values against the independent rounding.
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-7.0f, 7.0f);
  int mismatches = 0;
  for (int i = 0; i < 200000; ++i) {
    const float x = dist(rng);
    mismatches += fp4::encode_e2m1(x) != e2m1_nearest(x);
  }
  CHECK_MSG(mismatches == 0, std::to_string(mismatches) + " random mismatches");
}

void test_pack_unpack() {
  const std::vector<uint8_t> codes = {1, 2, 15, 0, 7, 8};
  std::vector<uint8_t> packed(3);
  fp4::pack_e2m1(codes, 1, 6, packed);
  CHECK(packed[0] == 0x21);  // low nibble = even element
  CHECK(packed[1] == 0x0F);
  CHECK(packed[2] == 0x87);
  std::mt19937 rng(7);
  std::vector<uint8_t> many(5 * 34), back(5 * 34), p(5 * 17);
  for (auto& c : many) c = static_cast<uint8_t>(rng() % 16);
  fp4::pack_e2m1(many, 5, 34, p);
  fp4::unpack_e2m1(p, 5, 34, back);
  CHECK(back == many);
}

void test_e4m3() {
  int decode_mismatches = 0;
  for (int b = 0; b < 256; ++b) {
    const double f = e4m3_formula(b);
    const float v = fp4::decode_e4m3(static_cast<uint8_t>(b));
    if (std::isnan(f)) {
      decode_mismatches += !std::isnan(v);
      continue;
    }
    decode_mismatches += static_cast<double>(v) != f;
    // Every finite byte round-trips, including -0 (0x80).
    decode_mismatches += fp4::encode_e4m3(v) != b;
  }
  CHECK_MSG(decode_mismatches == 0, std::to_string(decode_mismatches) + " mismatches");
  CHECK(fp4::decode_e4m3(0x7E) == 448.0f);
  CHECK(fp4::decode_e4m3(0x01) == std::ldexp(1.0f, -9));
  CHECK(fp4::decode_e4m3(0x08) == std::ldexp(1.0f, -6));
  CHECK(std::isnan(fp4::decode_e4m3(0x7F)) && std::isnan(fp4::decode_e4m3(0xFF)));

  // Midpoints between neighbours round to the even byte; just off them, to the nearer one.
  int tie_mismatches = 0;
  for (int b = 0; b < 0x7E; ++b) {
    const float lo = fp4::decode_e4m3(static_cast<uint8_t>(b));
    const float hi = fp4::decode_e4m3(static_cast<uint8_t>(b + 1));
    const float mid = (lo + hi) / 2;  // exact: fits in fp32
    const int even = b % 2 == 0 ? b : b + 1;
    tie_mismatches += fp4::encode_e4m3(mid) != even;
    tie_mismatches += fp4::encode_e4m3(-mid) != (0x80 | even);
    tie_mismatches += fp4::encode_e4m3(std::nextafter(mid, 0.0f)) != b;
    tie_mismatches += fp4::encode_e4m3(std::nextafter(mid, 1000.0f)) != b + 1;
  }
  CHECK_MSG(tie_mismatches == 0, std::to_string(tie_mismatches) + " tie mismatches");
  // Out of range: torch 2.13 saturates finite overflow and infinities; NaN keeps its sign.
  CHECK(fp4::encode_e4m3(464.0f) == 0x7E);
  CHECK(fp4::encode_e4m3(470.0f) == 0x7E);
  CHECK(fp4::encode_e4m3(1e30f) == 0x7E);
  CHECK(fp4::encode_e4m3(-1e30f) == 0xFE);
  CHECK(fp4::encode_e4m3(std::numeric_limits<float>::infinity()) == 0x7E);
  CHECK(fp4::encode_e4m3(std::numeric_limits<float>::quiet_NaN()) == 0x7F);
  CHECK(fp4::encode_e4m3(-std::numeric_limits<float>::quiet_NaN()) == 0xFF);
  CHECK(fp4::encode_e4m3(std::ldexp(1.0f, -10)) == 0x00);         // tie to even (zero)
  CHECK(fp4::encode_e4m3(std::ldexp(3.0f, -11)) == 0x01);         // 0.75 * 2^-9 -> 1
  CHECK(fp4::encode_e4m3(std::ldexp(3.0f, -10)) == 0x02);         // 1.5 * 2^-9: tie to 2
  CHECK(fp4::encode_e4m3(std::ldexp(5.0f, -10)) == 0x02);         // 2.5 * 2^-9: tie to 2
  CHECK(fp4::encode_e4m3(std::numeric_limits<float>::denorm_min()) == 0x00);
  CHECK(fp4::encode_e4m3(-0.0f) == 0x80);
}

void test_bf16() {
  CHECK(fp4::float_to_bf16(1.0f) == 0x3F80);
  CHECK(fp4::float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);       // tie -> even
  CHECK(fp4::float_to_bf16(1.0f + std::ldexp(3.0f, -8)) == 0x3F82);       // tie -> even (up)
  CHECK(fp4::float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3F81);
  CHECK(fp4::float_to_bf16(std::numeric_limits<float>::quiet_NaN()) == 0x7FC0);
  CHECK(fp4::bf16_to_float(0xC040) == -3.0f);
}

void test_swizzle() {
  // Hand-computed offsets for rows = 130, cols = 5 -> padded 256 x 8.
  CHECK(fp4::swizzle_offset_128x4(0, 0, 8) == 0);
  CHECK(fp4::swizzle_offset_128x4(0, 1, 8) == 1);
  CHECK(fp4::swizzle_offset_128x4(1, 0, 8) == 16);
  CHECK(fp4::swizzle_offset_128x4(32, 0, 8) == 4);
  CHECK(fp4::swizzle_offset_128x4(127, 3, 8) == 511);
  CHECK(fp4::swizzle_offset_128x4(0, 4, 8) == 512);
  CHECK(fp4::swizzle_offset_128x4(128, 0, 8) == 1024);
  CHECK(fp4::swizzle_offset_128x4(129, 5, 8) == 1553);
  // The offsets are a bijection onto the padded buffer.
  std::set<std::size_t> seen;
  for (std::size_t m = 0; m < 256; ++m)
    for (std::size_t k = 0; k < 8; ++k) seen.insert(fp4::swizzle_offset_128x4(m, k, 8));
  CHECK(seen.size() == 256 * 8 && *seen.rbegin() == 256 * 8 - 1);

  std::mt19937 rng(3);
  const std::size_t rows = 130, cols = 5;
  std::vector<uint8_t> scales(rows * cols), back(rows * cols), swz(256 * 8, 0xAA);
  for (auto& s : scales) s = static_cast<uint8_t>(1 + rng() % 255);  // nonzero, to see padding
  fp4::swizzle_scales_128x4(scales, rows, cols, swz);
  CHECK(swz[fp4::swizzle_offset_128x4(129, 4, 8)] == scales[129 * cols + 4]);
  std::size_t zeros = 0;
  for (uint8_t b : swz) zeros += b == 0;
  CHECK(zeros == swz.size() - scales.size());
  fp4::unswizzle_scales_128x4(swz, rows, cols, back);
  CHECK(back == scales);
}

void test_quantize_dequantize() {
  // A block of exactly representable values: s2 = 2^-5, scale 8 -> values code * 2^-2.
  const float s2 = 1.0f / 32.0f;
  std::vector<float> w(32);
  std::vector<uint8_t> codes(32);
  for (int i = 0; i < 32; ++i) {
    codes[i] = static_cast<uint8_t>(i == 0 ? 7 : (i * 5) % 16);
    if (codes[i] == 8) codes[i] = 0;
    w[i] = fp4::decode_e2m1(codes[i]) * 8.0f * s2;
  }
  std::vector<uint8_t> packed(16), scales(2), expected_packed(16), unpacked(32);
  fp4::quantize(w, 1, 32, s2, packed, scales);
  fp4::pack_e2m1(codes, 1, 32, expected_packed);
  CHECK(scales[0] == fp4::encode_e4m3(8.0f));
  CHECK(packed == expected_packed);
  std::vector<float> deq(32);
  fp4::dequantize(packed, scales, 1, 32, s2, deq);
  CHECK(deq == w);

  // Zero blocks get scale 1.0; tiny blocks clamp to 2^-9; huge ones to 448.
  std::vector<float> z(48, 0.0f);
  for (int i = 16; i < 32; ++i) z[i] = 1e-30f;
  for (int i = 32; i < 48; ++i) z[i] = 1e30f;
  std::vector<uint8_t> zp(24), zs(3);
  fp4::quantize(z, 1, 48, s2, zp, zs);
  CHECK(zs[0] == fp4::encode_e4m3(1.0f) && zs[1] == 0x01 && zs[2] == 0x7E);
  CHECK(zp[0] == 0 && zp[15] == 0 && zp[16] == 0x77 && zp[23] == 0x77);

  // Random weights: dequantize against the formula in double (two fp32 roundings apart).
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const std::size_t rows = 7, cols = 64;
  std::vector<float> x(rows * cols), out(rows * cols), out2(rows * cols);
  for (auto& v : x) v = normal(rng);
  const float gs = fp4::weight_scale_2_from_amax(fp4::abs_max(x));
  std::vector<uint8_t> p(rows * cols / 2), s(rows * cols / 16), c(rows * cols);
  fp4::quantize(x, rows, cols, gs, p, s);
  fp4::dequantize(p, s, rows, cols, gs, out);
  fp4::unpack_e2m1(p, rows, cols, c);
  int bad = 0;
  for (std::size_t i = 0; i < rows * cols; ++i) {
    const double ref = static_cast<double>(fp4::decode_e2m1(c[i])) *
                       static_cast<double>(fp4::decode_e4m3(s[i / 16])) * static_cast<double>(gs);
    bad += std::fabs(out[i] - ref) > std::ldexp(std::fabs(ref), -22);
    // Each element lands on the nearest grid point: error at most half the largest step (2 of 6).
    const double step = static_cast<double>(fp4::decode_e4m3(s[i / 16])) * gs;
    bad += std::fabs(ref - x[i]) > step * 1.0 + 1e-12;
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " elements off the formula");
  // bf16 output is the fp32 output rounded.
  std::vector<uint16_t> ob(rows * cols);
  fp4::dequantize_bf16(p, s, rows, cols, gs, ob);
  int bf_bad = 0;
  for (std::size_t i = 0; i < rows * cols; ++i) bf_bad += ob[i] != fp4::float_to_bf16(out[i]);
  CHECK(bf_bad == 0);
  // quantize_with_scales with the computed scales gives the same codes; bf16 input matches fp32.
  std::vector<uint8_t> p2(p.size());
  fp4::quantize_with_scales(x, rows, cols, s, gs, p2);
  CHECK(p2 == p);
  std::vector<uint16_t> xb(x.size());
  fp4::float_to_bf16(x, xb);
  std::vector<float> xbf(x.size());
  fp4::bf16_to_float(xb, xbf);
  std::vector<uint8_t> p3(p.size()), s3(s.size()), p4(p.size()), s4(s.size());
  fp4::quantize_bf16(xb, rows, cols, gs, p3, s3);
  fp4::quantize(xbf, rows, cols, gs, p4, s4);
  CHECK(p3 == p4 && s3 == s4);
}

void test_bad_arguments() {
  std::vector<float> w(32, 1.0f), out(32);
  std::vector<uint8_t> packed(16), scales(2), codes(32), swz(128 * 4);
  CHECK_THROWS(fp4::quantize(w, 1, 20, 1.0f, packed, scales), "cols");
  CHECK_THROWS(fp4::quantize(w, 2, 16, 0.0f, packed, scales), "weight_scale_2");
  CHECK_THROWS(fp4::quantize(w, 2, 16, -1.0f, packed, scales), "weight_scale_2");
  CHECK_THROWS(fp4::quantize(w, 2, 16, std::numeric_limits<float>::infinity(), packed, scales),
               "weight_scale_2");
  CHECK_THROWS(fp4::quantize(w, 2, 16, std::numeric_limits<float>::quiet_NaN(), packed, scales),
               "weight_scale_2");
  CHECK_THROWS(fp4::quantize(w, 3, 16, 1.0f, packed, scales), "weight");
  CHECK_THROWS(fp4::quantize(w, 1, 32, 1.0f, Span<uint8_t>(packed.data(), 15), scales), "packed");
  CHECK_THROWS(fp4::quantize(w, 1, 32, 1.0f, packed, Span<uint8_t>(scales.data(), 1)), "scales");
  std::vector<float> wn = w;
  wn[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS(fp4::quantize(wn, 1, 32, 1.0f, packed, scales), "weight: contains NaN at flat index 5");
  std::vector<uint8_t> zero_scales = {0x00, 0x38};
  CHECK_THROWS(fp4::quantize_with_scales(w, 1, 32, zero_scales, 1.0f, packed), "block_scales");
  std::vector<uint8_t> nan_scales = {0x38, 0x7F};
  CHECK_THROWS(fp4::quantize_with_scales(w, 1, 32, nan_scales, 1.0f, packed), "block_scales");
  CHECK_THROWS(fp4::dequantize(packed, Span<const uint8_t>(scales.data(), 1), 1, 32, 1.0f, out),
               "scales");
  CHECK_THROWS(fp4::dequantize(packed, scales, 1, 32, 0.0f, out), "weight_scale_2");
  CHECK_THROWS(fp4::dequantize(packed, scales, 1, 32, 1.0f, Span<float>(out.data(), 31)), "out");
  CHECK_THROWS(fp4::pack_e2m1(codes, 1, 31, packed), "cols");
  CHECK_THROWS(fp4::pack_e2m1(Span<const uint8_t>(codes.data(), 30), 1, 32, packed), "codes");
  codes[3] = 16;
  CHECK_THROWS(fp4::pack_e2m1(codes, 1, 32, packed), "codes");
  CHECK_THROWS(fp4::unpack_e2m1(packed, 1, 33, codes), "cols");
  CHECK_THROWS(fp4::swizzle_scales_128x4(Span<const uint8_t>(swz.data(), 7), 2, 4, swz), "scales");
  CHECK_THROWS(fp4::swizzle_scales_128x4(Span<const uint8_t>(swz.data(), 8), 2, 4,
                                        Span<uint8_t>(swz.data(), 100)),
               "swizzled");
  CHECK_THROWS(fp4::unswizzle_scales_128x4(swz, 0, 4, Span<uint8_t>()), "rows");
  CHECK_THROWS(fp4::encode_e2m1(w, Span<uint8_t>(codes.data(), 3)), "codes");
}

}  // namespace

int main() {
  test_e2m1_codes();
  test_e2m1_rounding();
  test_pack_unpack();
  test_e4m3();
  test_bf16();
  test_swizzle();
  test_quantize_dequantize();
  test_bad_arguments();
  return qwen35_trt::test::report();
}
