// NVFP4 codec: the bit-exact CPU reference for ModelOpt's NVFP4 weight format (the format and the
// scalar codec are in qwen35_trt/common/nvfp4_codec.h, shared with the CUDA kernels).
//
// The array functions below are the CPU reference and validate their arguments, throwing
// std::invalid_argument with a message that starts with the argument's name. All arrays are dense
// and row-major.
#pragma once

#include <cstddef>
#include <cstdint>

#include "qwen35_trt/common/nvfp4_codec.h"
#include "qwen35_trt/span.h"

namespace qwen35_trt::nvfp4 {

// ---------------------------------------------------------------------------------------------
// Array functions (CPU reference). Shapes in the comments are element counts; every Span must
// hold exactly that many elements.

// codes[i] = encode_e2m1(x[i]); x and codes have the same size.
void encode_e2m1(Span<const float> x, Span<uint8_t> codes);
// out[i] = decode_e2m1(codes[i]); codes must be < 16.
void decode_e2m1(Span<const uint8_t> codes, Span<float> out);

// codes [rows, cols] (each < 16) -> packed [rows, cols / 2]; cols must be even.
void pack_e2m1(Span<const uint8_t> codes, std::size_t rows, std::size_t cols, Span<uint8_t> packed);
// packed [rows, cols / 2] -> codes [rows, cols]; cols must be even.
void unpack_e2m1(Span<const uint8_t> packed, std::size_t rows, std::size_t cols,
                 Span<uint8_t> codes);

void encode_e4m3(Span<const float> x, Span<uint8_t> out);
void decode_e4m3(Span<const uint8_t> bits, Span<float> out);
void bf16_to_float(Span<const uint16_t> bits, Span<float> out);
void float_to_bf16(Span<const float> x, Span<uint16_t> out);

// amax(|weight|) in fp32 (NaN if any element is NaN). weight [rows * cols], any size >= 1.
float abs_max(Span<const float> weight);

// Per-block FP8 scales exactly as ModelOpt's `NVFP4QTensor.get_weights_scaling_factor`:
//   amax = max |weight[o, 16b : 16b + 16]|  (fp32; NaN propagates)
//   s = amax / (6 * weight_scale_2)          (6 * weight_scale_2 rounded to fp32 first)
//   s = 1 where s == 0;  s = clamp(s, 2^-9, 448);  scales[o, b] = encode_e4m3(s)
// weight [rows, cols], cols % 16 == 0 -> scales [rows, cols / 16]; weight_scale_2 finite > 0.
// A NaN in weight throws (ModelOpt would propagate it into the scales); +-inf is accepted and
// behaves as in ModelOpt (the block scale saturates to 448, the element to code +-6).
void compute_block_scales(Span<const float> weight, std::size_t rows, std::size_t cols,
                          float weight_scale_2, Span<uint8_t> scales);

// Quantize with given block scales, exactly as `NVFP4QTensor.quantize(..., weights_scaling_factor=
// block_scales, weights_scaling_factor_2=weight_scale_2)`:
//   code = encode_e2m1(weight[o, i] / (decode_e4m3(block_scales[o, i / 16]) * weight_scale_2))
// (the product in fp32), then packed as in pack_e2m1. Every block scale must decode to a
// positive number (ModelOpt never writes zero, negative or NaN scales).
// weight [rows, cols], block_scales [rows, cols / 16] -> packed [rows, cols / 2].
void quantize_with_scales(Span<const float> weight, std::size_t rows, std::size_t cols,
                          Span<const uint8_t> block_scales, float weight_scale_2,
                          Span<uint8_t> packed);

// compute_block_scales followed by quantize_with_scales: bit-exact with
// `NVFP4QTensor.quantize(weight, 16, weights_scaling_factor_2=weight_scale_2)` for fp32 input.
void quantize(Span<const float> weight, std::size_t rows, std::size_t cols, float weight_scale_2,
              Span<uint8_t> packed, Span<uint8_t> scales);

// The same for a bfloat16 weight given as its bit patterns. bf16 -> fp32 is exact and ModelOpt
// promotes bf16 / fp32 to fp32, so this equals quantize() on the widened weight.
void quantize_bf16(Span<const uint16_t> weight, std::size_t rows, std::size_t cols,
                   float weight_scale_2, Span<uint8_t> packed, Span<uint8_t> scales);

// out[o, i] = decode_e2m1(code[o, i]) * (decode_e4m3(scales[o, i / 16]) * weight_scale_2), the
// bracket in fp32 first as ModelOpt's `NVFP4QTensor.dequantize` does.
// packed [rows, cols / 2], scales [rows, cols / 16] -> out [rows, cols].
void dequantize(Span<const uint8_t> packed, Span<const uint8_t> scales, std::size_t rows,
                std::size_t cols, float weight_scale_2, Span<float> out);
// As dequantize, then rounded to bfloat16 (RNE): out holds bf16 bit patterns.
void dequantize_bf16(Span<const uint8_t> packed, Span<const uint8_t> scales, std::size_t rows,
                     std::size_t cols, float weight_scale_2, Span<uint16_t> out);

// Scales [rows, cols] (cols = K / 16) -> swizzled [roundup(rows, 128) * roundup(cols, 4)] in the
// 128x4 layout (see swizzle_offset_128x4); padding bytes are zero.
void swizzle_scales_128x4(Span<const uint8_t> scales, std::size_t rows, std::size_t cols,
                          Span<uint8_t> swizzled);
// The inverse: swizzled [roundup(rows, 128) * roundup(cols, 4)] -> scales [rows, cols]; the
// padding is dropped.
void unswizzle_scales_128x4(Span<const uint8_t> swizzled, std::size_t rows, std::size_t cols,
                            Span<uint8_t> scales);

}  // namespace qwen35_trt::nvfp4
