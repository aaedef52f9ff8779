// The W4A16 fragment layout of an NVFP4 matrix: the layout the W4A16 GEMM (csrc/kernels/moe/)
// reads with the fewest instructions, written offline by the engine builder for the targets whose
// NVFP4 GEMMs are W4A16 (targets.TargetSpec.scale_layout == "w4a16_fragments"; docs/engine_dir.md).
//
// A matrix [rows, k] keeps the shapes and dtypes of ModelOpt's format (codes uint8 [rows, k / 2],
// block scales uint8 [rows, k / 16], row-major), but:
//
// Codes. Each row is cut into groups of 64 codes (32 bytes); the last k % 64 codes of a row (a
// partial group) stay in ModelOpt's order. Inside a full group the bytes are eight little-endian
// 32-bit words; word 2 q + h (at byte 8 q + 4 h) holds the 16 codes that lane q of an MMA quad
// needs for k-steps 2 h and 2 h + 1 of mma.m16n8k16 (column k = 16 ks + 2 q, + 1, + 8, + 9), as
// four pairs of neighbouring codes (c[j], c[j + 1]), j = 32 h + 2 q + 8 p for pair p = 0..3:
// pairs 0 and 1 are the B fragment (b0, b1) of k-step 2 h, pairs 2 and 3 that of k-step 2 h + 1.
// A code's bits (sign s, exponent e1 e0, mantissa m) sit where the bf16 bits of its value times
// 2^-126 are after one shift and mask (kPairBits): pair 0 in place (bits 6, 7, 8, 15 for the first
// code, + 16 for the second), pair 1 three bits lower, pair 2 six bits lower, pair 3 in the bits
// left over (m, e0 four bits above place, e1 five, s one below). So one 32-bit shared load feeds
// two k-steps, and a pair becomes a bf16x2 of code x 2^-126 in at most six integer instructions
// (E2M1 zero-exponent codes become bf16 subnormals, exactly).
//
// Scales. Each FP8 E4M3 block scale is stored as UE5M3: an unsigned 8-bit float with 5 exponent
// bits (bias 10), 3 mantissa bits and no subnormals (E4M3's subnormals become normals, exactly);
// 0 is zero. Negative or NaN scales are refused (ModelOpt never writes them); a block whose scale
// is zero gets zero codes, so every stored block has the value it had. The GEMM turns four UE5M3
// scales into two bf16x2 of scale x 2^119 with a shift, a mask and an add per pair (the bf16
// exponent field is the UE5M3 one plus 236), so code x 2^-126 times scale x 2^119 is the exact
// bf16 product code x scale x 2^-7, and the epilogue multiplies the fp32 sums by 2^7.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qwen35_trt/common/host_device.h"

namespace qwen35_trt::nvfp4 {

inline constexpr int kFragmentGroup = 64;        // codes per permuted group of a row
inline constexpr int kFragmentProductExp = -7;   // the bf16 weights are code x scale x 2^-7
inline constexpr uint32_t kUe5m3Bf16Bias = 236u; // bf16 exponent field = UE5M3 exponent field + this
inline constexpr uint8_t kUe5m3Invalid = 0xFF;   // e4m3_to_ue5m3 of a negative or NaN scale

// Bit positions in the fragment word of pair p's two codes: [p][code][bit], bit 0 = m, 1 = e0,
// 2 = e1, 3 = s.
inline constexpr int kPairBits[4][2][4] = {
    {{6, 7, 8, 15}, {22, 23, 24, 31}},
    {{3, 4, 5, 12}, {19, 20, 21, 28}},
    {{0, 1, 2, 9}, {16, 17, 18, 25}},
    {{10, 11, 13, 14}, {26, 27, 29, 30}},
};

// The code index (0..63, in the group) of pair p, code i of word (q, h).
QWEN35_HD int fragment_code_index(int q, int h, int p, int i) { return 32 * h + 2 * q + 8 * p + i; }

// FP8 E4M3 bits -> UE5M3 bits (exact); kUe5m3Invalid for negative, negative-zero excepted, or NaN.
QWEN35_HD uint8_t e4m3_to_ue5m3(uint8_t b) {
  if ((b & 0x7F) == 0) return 0;  // +0 and -0
  if ((b & 0x80) != 0 || (b & 0x7F) == 0x7F) return kUe5m3Invalid;
  int exp = (b >> 3) & 0xF;  // E4M3 field, bias 7
  int man = b & 7;
  if (exp == 0) {            // subnormal man x 2^-9: normalise
    exp = 1;
    while ((man & 8) == 0) {
      man <<= 1;
      --exp;
    }
    man &= 7;
  }
  return static_cast<uint8_t>(((exp + 3) << 3) | man);  // unbiased exp - 7 + 10
}

// UE5M3 bits -> FP8 E4M3 bits (the inverse of e4m3_to_ue5m3 on its image).
QWEN35_HD uint8_t ue5m3_to_e4m3(uint8_t u) {
  if (u == 0) return 0;
  int exp = (u >> 3) - 3;  // E4M3 field
  int man = u & 7;
  if (exp <= 0) {          // back to an E4M3 subnormal
    man |= 8;
    man >>= (1 - exp);
    exp = 0;
  }
  return static_cast<uint8_t>((exp << 3) | man);
}

// One group's word (q, h) from the group's 32 bytes in ModelOpt order.
QWEN35_HD uint32_t pack_fragment_word(const uint8_t* group, int q, int h) {
  uint32_t w = 0;
  for (int p = 0; p < 4; ++p) {
    for (int i = 0; i < 2; ++i) {
      const int c = fragment_code_index(q, h, p, i);
      const uint32_t code = (group[c / 2] >> (4 * (c % 2))) & 0xFu;
      for (int bit = 0; bit < 4; ++bit) w |= ((code >> bit) & 1u) << kPairBits[p][i][bit];
    }
  }
  return w;
}

// Lookup tables of the row codec, built from kPairBits: pack[p][b] = the bits that ModelOpt byte
// b (two neighbouring codes) sets as pair p of a word; unpack[i][b] = the ModelOpt bytes (byte p
// of the result for pair p) that byte i of a word holds bits of. Pair p of word (q, h) is group
// byte 16 h + q + 4 p, so a word is four lookups and a group 32.
struct FragmentTables {
  uint32_t pack[4][256];
  uint32_t unpack[4][256];
};

inline const FragmentTables& fragment_tables() {
  static const FragmentTables tables = [] {
    FragmentTables t{};
    for (int p = 0; p < 4; ++p) {
      for (uint32_t b = 0; b < 256; ++b) {
        uint8_t group[kFragmentGroup / 2] = {};
        group[4 * p] = static_cast<uint8_t>(b);  // pair p of word (0, 0), every other code zero
        t.pack[p][b] = pack_fragment_word(group, 0, 0);
      }
    }
    for (int i = 0; i < 4; ++i) {
      for (uint32_t b = 0; b < 256; ++b) {
        uint32_t v = 0;
        for (int p = 0; p < 4; ++p)
          for (int c = 0; c < 2; ++c)
            for (int bit = 0; bit < 4; ++bit) {
              const int pos = kPairBits[p][c][bit];
              if (pos / 8 == i && ((b >> (pos % 8)) & 1u)) v |= 1u << (8 * p + 4 * c + bit);
            }
        t.unpack[i][b] = v;
      }
    }
    return t;
  }();
  return tables;
}

// Row `codes` (k / 2 bytes) and `scales` (k / 16 E4M3) -> the fragment layout in `out_codes` and
// `out_scales` (UE5M3). False (outputs unspecified) if a scale is negative or NaN; `bad_block`
// then names the first such block.
inline bool pack_fragment_row(const uint8_t* codes, const uint8_t* scales, std::size_t k,
                              uint8_t* out_codes, uint8_t* out_scales, std::size_t* bad_block) {
  uint8_t group[kFragmentGroup / 2];
  const std::size_t blocks = k / 16, full = k / kFragmentGroup;
  for (std::size_t b = 0; b < blocks; ++b) {
    out_scales[b] = e4m3_to_ue5m3(scales[b]);
    if (out_scales[b] == kUe5m3Invalid) {
      if (bad_block != nullptr) *bad_block = b;
      return false;
    }
  }
  for (std::size_t g = 0; g * kFragmentGroup < k; ++g) {
    const std::size_t bytes = (g < full ? kFragmentGroup : k % kFragmentGroup) / 2;
    for (std::size_t i = 0; i < bytes; ++i) {
      // A zero-scale block is stored with zero codes: the same values, and the GEMM's scale of a
      // zero UE5M3 is not zero.
      group[i] = out_scales[(g * kFragmentGroup + 2 * i) / 16] == 0 ? 0 : codes[g * kFragmentGroup / 2 + i];
    }
    uint8_t* dst = out_codes + g * kFragmentGroup / 2;
    if (g < full) {
      const FragmentTables& t = fragment_tables();
      for (int q = 0; q < 4; ++q) {
        for (int h = 0; h < 2; ++h) {
          const uint8_t* b = group + 16 * h + q;  // pack_fragment_word(group, q, h), by table
          const uint32_t w = t.pack[0][b[0]] | t.pack[1][b[4]] | t.pack[2][b[8]] | t.pack[3][b[12]];
          for (int j = 0; j < 4; ++j) dst[8 * q + 4 * h + j] = static_cast<uint8_t>(w >> (8 * j));
        }
      }
    } else {
      for (std::size_t i = 0; i < bytes; ++i) dst[i] = group[i];
    }
  }
  return true;
}

// The inverse of pack_fragment_row: ModelOpt's codes and E4M3 scales of one row.
inline void unpack_fragment_row(const uint8_t* codes, const uint8_t* scales, std::size_t k,
                                uint8_t* out_codes, uint8_t* out_scales) {
  for (std::size_t b = 0; b < k / 16; ++b) out_scales[b] = ue5m3_to_e4m3(scales[b]);
  const std::size_t full = k / kFragmentGroup;
  for (std::size_t g = 0; g * kFragmentGroup < k; ++g) {
    const uint8_t* src = codes + g * kFragmentGroup / 2;
    uint8_t* dst = out_codes + g * kFragmentGroup / 2;
    if (g < full) {
      const FragmentTables& t = fragment_tables();
      for (int q = 0; q < 4; ++q) {
        for (int h = 0; h < 2; ++h) {
          const uint8_t* p = src + 8 * q + 4 * h;  // the inverse of pack_fragment_word, by table
          const uint32_t v = t.unpack[0][p[0]] | t.unpack[1][p[1]] | t.unpack[2][p[2]] | t.unpack[3][p[3]];
          for (int pair = 0; pair < 4; ++pair) dst[16 * h + q + 4 * pair] = static_cast<uint8_t>(v >> (8 * pair));
        }
      }
    } else {
      for (std::size_t i = 0; i < (k % kFragmentGroup) / 2; ++i) dst[i] = src[i];
    }
  }
}

}  // namespace qwen35_trt::nvfp4
