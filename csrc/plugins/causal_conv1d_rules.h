// The CausalConv1d plugin's contract in plain C++ (docs/ops.md "CausalConv1d", docs/plugins.md):
// name, fields, tensor positions, dtypes, shape rules, aliasing, workspace and serialisation.
// The TensorRT adapter (causal_conv1d_plugin.cpp) only translates to and from these; ctest
// covers them without TensorRT (csrc/tests/test_plugin_rules.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "field_rules.h"
#include "plugin_types.h"

namespace qwen35_trt::plugins {

// The plugin name is the ONNX op_type. Prefixed because TensorRT's ONNX parser prefers its own
// importer when an op_type matches a built-in ONNX op, whatever the node's domain.
inline constexpr const char* kCausalConv1dName = "Qwen35CausalConv1d";

// Tensor positions (inputs, then outputs, as supportsFormatCombination numbers them).
enum CausalConv1dPos : int32_t {
  kConvX = 0,              // [T, C] bf16
  kConvWeight = 1,         // [C, W] bf16
  kConvStatePool = 2,      // [num_slots, C, W - 1] bf16, updated in place
  kConvSlots = 3,          // [B] int32
  kConvCuSeqlens = 4,      // [B + 1] int32
  kConvHasInitialState = 5,  // [B] bool (one byte per sequence, what the kernel reads)
  kConvY = 6,              // output 0: [T, C] bf16
  kConvStatePoolOut = 7,   // output 1: the pool, aliasing input kConvStatePool
};
inline constexpr int32_t kCausalConv1dInputs = 6;
inline constexpr int32_t kCausalConv1dOutputs = 2;

// The one dtype each position accepts (only linear, dense formats are accepted).
ElementType causal_conv1d_dtype(int32_t pos);
const char* causal_conv1d_tensor_name(int32_t pos);

// Output index -> the input whose dims it has; also the aliasing: output 1 IS input 2.
int32_t causal_conv1d_output_shape_source(int32_t output);
int32_t causal_conv1d_aliased_input(int32_t output);  // -1: not aliased

// Fields (= ONNX node attributes):
//   width       INT, required, in [2, 8]: the kernel width W (weight [C, W], state [.., C, W - 1]).
//   activation  STRING, optional, "silu" (the only activation of the op; kept explicit so a graph
//               that asks for another one is refused rather than silently run with SiLU).
struct CausalConv1dFields {
  int32_t width = 0;
  std::string activation = "silu";
};
inline constexpr int32_t kConvMinWidth = 2;
inline constexpr int32_t kConvMaxWidth = 8;

// The schema getFieldNames lists (names and types, no values).
std::vector<FieldValue> causal_conv1d_field_schema();

// Parses and checks the fields; "" on success, else a message naming the field.
std::string parse_causal_conv1d_fields(const std::vector<FieldView>& fields, CausalConv1dFields* out);

// What getFieldsToSerialize returns; parse_causal_conv1d_fields reads it back unchanged.
std::vector<FieldValue> serialize_causal_conv1d_fields(const CausalConv1dFields& fields);

// Checks the input dims (one vector per input; -1 = not known yet, as at build time) against
// each other and the fields; "" when consistent, else a message naming the tensor and dimension.
std::string check_causal_conv1d_shapes(const std::vector<std::vector<int64_t>>& inputs,
                                       const CausalConv1dFields& fields);

// The kernel needs no scratch memory.
inline constexpr std::size_t causal_conv1d_workspace_bytes() { return 0; }

}  // namespace qwen35_trt::plugins
