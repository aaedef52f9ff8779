// CPU reference of the NVFP4 codec; the contract and rounding rules are in nvfp4.h.
#include "qwen35_trt/nvfp4.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace qwen35_trt::nvfp4 {
namespace {

[[noreturn]] void fail(const char* arg, const std::string& what) {
  throw std::invalid_argument(std::string(arg) + ": " + what);
}

void check_size(const char* arg, std::size_t got, std::size_t expected, const char* shape) {
  if (got != expected) {
    std::ostringstream os;
    os << "expected " << expected << " elements (" << shape << "), got " << got;
    fail(arg, os.str());
  }
}

void check_cols_even(std::size_t cols) {
  if (cols % 2 != 0) fail("cols", "must be even (two E2M1 codes per byte), got " + std::to_string(cols));
}

void check_cols_block(std::size_t cols) {
  if (cols == 0 || cols % kBlockSize != 0) {
    fail("cols", "must be a positive multiple of 16 (the NVFP4 block size), got " +
                     std::to_string(cols));
  }
}

void check_global_scale(float weight_scale_2) {
  if (!std::isfinite(weight_scale_2) || !(weight_scale_2 > 0.0f)) {
    std::ostringstream os;
    os << "must be finite and > 0, got " << weight_scale_2;
    fail("weight_scale_2", os.str());
  }
}

void check_codes(const char* arg, Span<const uint8_t> codes) {
  for (std::size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] > 15) {
      fail(arg, "E2M1 codes must be < 16, got " + std::to_string(codes[i]) + " at flat index " +
                    std::to_string(i));
    }
  }
}

// rows * cols with an overflow check, so that absurd shapes fail instead of wrapping.
std::size_t element_count(std::size_t rows, std::size_t cols) {
  if (cols != 0 && rows > SIZE_MAX / cols) fail("rows", "rows * cols overflows size_t");
  return rows * cols;
}

// NaN weights are rejected rather than propagated: a NaN in a checkpoint is corruption, and
// ModelOpt would silently turn the whole block into NaN scales.
[[noreturn]] void fail_nan(std::size_t flat_index) {
  fail("weight", "contains NaN at flat index " + std::to_string(flat_index));
}

// ModelOpt's torch.clamp(min=2^-9, max=448); s is never NaN here (NaN weights are rejected).
float clamp_block_scale(float s) {
  if (s < kScaleMin) return kScaleMin;
  if (s > kE4M3Max) return kE4M3Max;
  return s;
}

template <typename Load>
void compute_block_scales_impl(Load load, std::size_t rows, std::size_t cols, float weight_scale_2,
                               uint8_t* scales) {
  const float denom = kE2M1Max * weight_scale_2;  // fp32, as torch's 6.0 * tensor(s2)
  const std::size_t blocks = cols / kBlockSize;
  for (std::size_t o = 0; o < rows; ++o) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t base = o * cols + b * kBlockSize;
      float amax = 0.0f;
      for (int j = 0; j < kBlockSize; ++j) {
        const float a = std::fabs(load(base + j));
        if (std::isnan(a)) fail_nan(base + j);
        if (a > amax) amax = a;
      }
      float s = amax / denom;
      if (s == 0.0f) s = 1.0f;
      scales[o * blocks + b] = encode_e4m3(clamp_block_scale(s));
    }
  }
}

template <typename Load>
void quantize_with_scales_impl(Load load, std::size_t rows, std::size_t cols, const uint8_t* scales,
                               float weight_scale_2, uint8_t* packed) {
  const std::size_t blocks = cols / kBlockSize;
  for (std::size_t o = 0; o < rows; ++o) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const float block_scale = decode_e4m3(scales[o * blocks + b]) * weight_scale_2;
      const std::size_t base = o * cols + b * kBlockSize;
      for (int j = 0; j < kBlockSize; j += 2) {
        const float x0 = load(base + j);
        const float x1 = load(base + j + 1);
        if (std::isnan(x0)) fail_nan(base + j);
        if (std::isnan(x1)) fail_nan(base + j + 1);
        const uint8_t lo = encode_e2m1(x0 / block_scale);
        const uint8_t hi = encode_e2m1(x1 / block_scale);
        packed[(base + j) / 2] = static_cast<uint8_t>(lo | (hi << 4));
      }
    }
  }
}

void check_quantize_args(std::size_t weight_size, std::size_t rows, std::size_t cols,
                         float weight_scale_2, std::size_t packed_size) {
  check_cols_block(cols);
  check_global_scale(weight_scale_2);
  const std::size_t n = element_count(rows, cols);
  check_size("weight", weight_size, n, "rows * cols");
  check_size("packed", packed_size, n / 2, "rows * cols / 2");
}

template <typename Store>
void dequantize_impl(Span<const uint8_t> packed, Span<const uint8_t> scales, std::size_t rows,
                     std::size_t cols, float weight_scale_2, std::size_t out_size, Store store) {
  check_cols_block(cols);
  check_global_scale(weight_scale_2);
  const std::size_t n = element_count(rows, cols);
  check_size("packed", packed.size(), n / 2, "rows * cols / 2");
  check_size("scales", scales.size(), n / kBlockSize, "rows * cols / 16");
  check_size("out", out_size, n, "rows * cols");
  const std::size_t blocks = cols / kBlockSize;
  for (std::size_t o = 0; o < rows; ++o) {
    for (std::size_t b = 0; b < blocks; ++b) {
      const float block_scale = decode_e4m3(scales[o * blocks + b]) * weight_scale_2;
      const std::size_t base = o * cols + b * kBlockSize;
      for (int j = 0; j < kBlockSize; j += 2) {
        const uint8_t byte = packed[(base + j) / 2];
        store(base + j, decode_e2m1(byte & 0xF) * block_scale);
        store(base + j + 1, decode_e2m1(byte >> 4) * block_scale);
      }
    }
  }
}

void check_swizzle_args(std::size_t rows, std::size_t cols, std::size_t plain_size,
                        const char* plain_name, std::size_t swizzled_size) {
  if (rows == 0) fail("rows", "must be > 0");
  if (cols == 0) fail("cols", "must be > 0");
  const std::size_t n = element_count(rows, cols);
  check_size(plain_name, plain_size, n, "rows * cols");
  const std::size_t padded = element_count(round_up(rows, 128), round_up(cols, 4));
  check_size("swizzled", swizzled_size, padded, "roundup(rows, 128) * roundup(cols, 4)");
}

}  // namespace

void encode_e2m1(Span<const float> x, Span<uint8_t> codes) {
  check_size("codes", codes.size(), x.size(), "same as x");
  for (std::size_t i = 0; i < x.size(); ++i) codes[i] = encode_e2m1(x[i]);
}

void decode_e2m1(Span<const uint8_t> codes, Span<float> out) {
  check_size("out", out.size(), codes.size(), "same as codes");
  check_codes("codes", codes);
  for (std::size_t i = 0; i < codes.size(); ++i) out[i] = decode_e2m1(codes[i]);
}

void pack_e2m1(Span<const uint8_t> codes, std::size_t rows, std::size_t cols, Span<uint8_t> packed) {
  check_cols_even(cols);
  const std::size_t n = element_count(rows, cols);
  check_size("codes", codes.size(), n, "rows * cols");
  check_size("packed", packed.size(), n / 2, "rows * cols / 2");
  check_codes("codes", codes);
  for (std::size_t i = 0; i < n / 2; ++i) {
    packed[i] = static_cast<uint8_t>(codes[2 * i] | (codes[2 * i + 1] << 4));
  }
}

void unpack_e2m1(Span<const uint8_t> packed, std::size_t rows, std::size_t cols,
                 Span<uint8_t> codes) {
  check_cols_even(cols);
  const std::size_t n = element_count(rows, cols);
  check_size("packed", packed.size(), n / 2, "rows * cols / 2");
  check_size("codes", codes.size(), n, "rows * cols");
  for (std::size_t i = 0; i < n / 2; ++i) {
    codes[2 * i] = packed[i] & 0xF;
    codes[2 * i + 1] = packed[i] >> 4;
  }
}

void encode_e4m3(Span<const float> x, Span<uint8_t> out) {
  check_size("out", out.size(), x.size(), "same as x");
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = encode_e4m3(x[i]);
}

void decode_e4m3(Span<const uint8_t> bits, Span<float> out) {
  check_size("out", out.size(), bits.size(), "same as bits");
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = decode_e4m3(bits[i]);
}

void bf16_to_float(Span<const uint16_t> bits, Span<float> out) {
  check_size("out", out.size(), bits.size(), "same as bits");
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = bf16_to_float(bits[i]);
}

void float_to_bf16(Span<const float> x, Span<uint16_t> out) {
  check_size("out", out.size(), x.size(), "same as x");
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);
}

float abs_max(Span<const float> weight) {
  if (weight.size() == 0) fail("weight", "must not be empty");
  float amax = 0.0f;
  for (float v : weight) {
    const float a = std::fabs(v);
    if (std::isnan(a)) return a;
    if (a > amax) amax = a;
  }
  return amax;
}

void compute_block_scales(Span<const float> weight, std::size_t rows, std::size_t cols,
                          float weight_scale_2, Span<uint8_t> scales) {
  check_cols_block(cols);
  check_global_scale(weight_scale_2);
  const std::size_t n = element_count(rows, cols);
  check_size("weight", weight.size(), n, "rows * cols");
  check_size("scales", scales.size(), n / kBlockSize, "rows * cols / 16");
  const float* w = weight.data();
  compute_block_scales_impl([w](std::size_t i) { return w[i]; }, rows, cols, weight_scale_2,
                            scales.data());
}

void quantize_with_scales(Span<const float> weight, std::size_t rows, std::size_t cols,
                          Span<const uint8_t> block_scales, float weight_scale_2,
                          Span<uint8_t> packed) {
  check_quantize_args(weight.size(), rows, cols, weight_scale_2, packed.size());
  check_size("block_scales", block_scales.size(), rows * cols / kBlockSize, "rows * cols / 16");
  for (std::size_t i = 0; i < block_scales.size(); ++i) {
    if (!(decode_e4m3(block_scales[i]) > 0.0f)) {
      fail("block_scales", "must be positive E4M3 values (not zero, negative or NaN), got byte " +
                               std::to_string(block_scales[i]) + " at flat index " +
                               std::to_string(i));
    }
  }
  const float* w = weight.data();
  quantize_with_scales_impl([w](std::size_t i) { return w[i]; }, rows, cols, block_scales.data(),
                            weight_scale_2, packed.data());
}

void quantize(Span<const float> weight, std::size_t rows, std::size_t cols, float weight_scale_2,
              Span<uint8_t> packed, Span<uint8_t> scales) {
  check_quantize_args(weight.size(), rows, cols, weight_scale_2, packed.size());
  check_size("scales", scales.size(), rows * cols / kBlockSize, "rows * cols / 16");
  const float* w = weight.data();
  auto load = [w](std::size_t i) { return w[i]; };
  compute_block_scales_impl(load, rows, cols, weight_scale_2, scales.data());
  quantize_with_scales_impl(load, rows, cols, scales.data(), weight_scale_2, packed.data());
}

void quantize_bf16(Span<const uint16_t> weight, std::size_t rows, std::size_t cols,
                   float weight_scale_2, Span<uint8_t> packed, Span<uint8_t> scales) {
  check_quantize_args(weight.size(), rows, cols, weight_scale_2, packed.size());
  check_size("scales", scales.size(), rows * cols / kBlockSize, "rows * cols / 16");
  const uint16_t* w = weight.data();
  auto load = [w](std::size_t i) { return bf16_to_float(w[i]); };
  compute_block_scales_impl(load, rows, cols, weight_scale_2, scales.data());
  quantize_with_scales_impl(load, rows, cols, scales.data(), weight_scale_2, packed.data());
}

void dequantize(Span<const uint8_t> packed, Span<const uint8_t> scales, std::size_t rows,
                std::size_t cols, float weight_scale_2, Span<float> out) {
  float* o = out.data();
  dequantize_impl(packed, scales, rows, cols, weight_scale_2, out.size(),
                  [o](std::size_t i, float v) { o[i] = v; });
}

void dequantize_bf16(Span<const uint8_t> packed, Span<const uint8_t> scales, std::size_t rows,
                     std::size_t cols, float weight_scale_2, Span<uint16_t> out) {
  uint16_t* o = out.data();
  dequantize_impl(packed, scales, rows, cols, weight_scale_2, out.size(),
                  [o](std::size_t i, float v) { o[i] = float_to_bf16(v); });
}

void swizzle_scales_128x4(Span<const uint8_t> scales, std::size_t rows, std::size_t cols,
                          Span<uint8_t> swizzled) {
  check_swizzle_args(rows, cols, scales.size(), "scales", swizzled.size());
  const std::size_t cols_p = round_up(cols, 4);
  std::fill(swizzled.begin(), swizzled.end(), uint8_t{0});
  for (std::size_t m = 0; m < rows; ++m) {
    for (std::size_t k = 0; k < cols; ++k) {
      swizzled[swizzle_offset_128x4(m, k, cols_p)] = scales[m * cols + k];
    }
  }
}

void unswizzle_scales_128x4(Span<const uint8_t> swizzled, std::size_t rows, std::size_t cols,
                            Span<uint8_t> scales) {
  check_swizzle_args(rows, cols, scales.size(), "scales", swizzled.size());
  const std::size_t cols_p = round_up(cols, 4);
  for (std::size_t m = 0; m < rows; ++m) {
    for (std::size_t k = 0; k < cols; ++k) {
      scales[m * cols + k] = swizzled[swizzle_offset_128x4(m, k, cols_p)];
    }
  }
}

}  // namespace qwen35_trt::nvfp4
