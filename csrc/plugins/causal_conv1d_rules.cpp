// The CausalConv1d plugin's contract in plain C++ (see causal_conv1d_rules.h).
#include "causal_conv1d_rules.h"

#include "shape_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kWidth = "width";
const char* const kActivation = "activation";

}  // namespace

ElementType causal_conv1d_dtype(int32_t pos) {
  switch (pos) {
    case kConvSlots:
    case kConvCuSeqlens: return ElementType::kInt32;
    case kConvHasInitialState: return ElementType::kBool;
    default: return ElementType::kBF16;
  }
}

const char* causal_conv1d_tensor_name(int32_t pos) {
  static const char* const names[] = {"x", "weight", "conv_state_pool", "slots", "cu_seqlens",
                                      "has_initial_state", "y", "conv_state_pool (output)"};
  return pos >= 0 && pos < kCausalConv1dInputs + kCausalConv1dOutputs ? names[pos] : "?";
}

int32_t causal_conv1d_output_shape_source(int32_t output) {
  return output == 0 ? kConvX : output == 1 ? kConvStatePool : -1;
}

int32_t causal_conv1d_aliased_input(int32_t output) { return output == 1 ? kConvStatePool : -1; }

std::vector<FieldValue> causal_conv1d_field_schema() {
  FieldValue width;
  width.name = kWidth;
  width.type = FieldType::kInt32;
  width.length = 1;
  FieldValue activation;
  activation.name = kActivation;
  activation.type = FieldType::kChar;
  activation.length = 0;  // variable
  return {width, activation};
}

std::string parse_causal_conv1d_fields(const std::vector<FieldView>& fields, CausalConv1dFields* out) {
  std::string e = check_known_fields(fields, {kWidth, kActivation});
  if (!e.empty()) return e;
  CausalConv1dFields parsed;
  const FieldView* width = find_field(fields, kWidth, &e);
  if (!e.empty()) return e;
  if (width == nullptr) {
    return "field 'width': missing (expected one integer (INT32) in [" + std::to_string(kConvMinWidth) + ", " +
           std::to_string(kConvMaxWidth) + "])";
  }
  int64_t w = 0;
  e = read_int_field(*width, kConvMinWidth, kConvMaxWidth, &w);
  if (!e.empty()) return e;
  parsed.width = static_cast<int32_t>(w);
  const FieldView* activation = find_field(fields, kActivation, &e);
  if (!e.empty()) return e;
  if (activation != nullptr) {
    e = read_string_field(*activation, {"silu"}, &parsed.activation);
    if (!e.empty()) return e;
  }
  *out = parsed;
  return "";
}

std::vector<FieldValue> serialize_causal_conv1d_fields(const CausalConv1dFields& fields) {
  return {FieldValue::int32(kWidth, fields.width), FieldValue::string(kActivation, fields.activation)};
}

std::string check_causal_conv1d_shapes(const std::vector<std::vector<int64_t>>& in, const CausalConv1dFields& f) {
  if (static_cast<int32_t>(in.size()) != kCausalConv1dInputs) {
    return "inputs: expected 6 (x, weight, conv_state_pool, slots, cu_seqlens, has_initial_state), got " +
           std::to_string(in.size());
  }
  static const size_t ranks[] = {2, 2, 3, 1, 1, 1};
  for (int32_t i = 0; i < kCausalConv1dInputs; ++i) {
    if (in[i].size() != ranks[i]) {
      return std::string(causal_conv1d_tensor_name(i)) + ": expected rank " + std::to_string(ranks[i]) + ", got " +
             dims_str(in[i]);
    }
  }
  const auto& x = in[kConvX];
  const auto& w = in[kConvWeight];
  const auto& pool = in[kConvStatePool];
  const int64_t channels = x[1] >= 0 ? x[1] : w[0] >= 0 ? w[0] : pool[1];
  if (channels >= 0 && channels % 8 != 0) {
    return "x: channels (dim 1) must be a multiple of 8 (the CUDA kernel's vector width), got " + std::to_string(channels);
  }
  if (conflict(w[0], channels) || conflict(pool[1], channels)) {
    return "weight / conv_state_pool: channels differ from x's: x " + dims_str(x) + ", weight " + dims_str(w) +
           ", conv_state_pool " + dims_str(pool);
  }
  if (conflict(w[1], f.width)) {
    return "weight: dim 1 must equal the field width = " + std::to_string(f.width) + ", got " + dims_str(w);
  }
  if (conflict(pool[2], f.width - 1)) {
    return "conv_state_pool: dim 2 must be width - 1 = " + std::to_string(f.width - 1) + ", got " + dims_str(pool);
  }
  const int64_t batch = in[kConvSlots][0];
  if (conflict(in[kConvHasInitialState][0], batch)) {
    return "has_initial_state: must have one entry per sequence (slots has " + std::to_string(batch) + "), got " +
           dims_str(in[kConvHasInitialState]);
  }
  if (batch >= 0 && conflict(in[kConvCuSeqlens][0], batch + 1)) {
    return "cu_seqlens: must have B + 1 = " + std::to_string(batch + 1) + " entries, got " +
           dims_str(in[kConvCuSeqlens]);
  }
  return "";
}

}  // namespace qwen35_trt::plugins
