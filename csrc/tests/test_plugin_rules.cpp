// The CausalConv1d plugin's contract in plain C++ (csrc/plugins/causal_conv1d_rules.h), without
// TensorRT: field parsing as the ONNX parser hands fields over, serialisation round trip, shape,
// dtype and aliasing rules.
#include <cstdint>
#include <string>
#include <vector>

#include "causal_conv1d_rules.h"
#include "check.h"

using namespace qwen35_trt::plugins;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string parse(const std::vector<FieldView>& fields, CausalConv1dFields* out = nullptr) {
  CausalConv1dFields scratch;
  return parse_causal_conv1d_fields(fields, out != nullptr ? out : &scratch);
}

void test_fields() {
  const int32_t four = 4;
  const int64_t four64 = 4;
  const float four_f = 4.0f;
  const char silu[] = "silu";  // with its NUL, as the ONNX parser passes a STRING
  const char relu[] = "relu";

  CausalConv1dFields f;
  CHECK(parse({{"width", FieldType::kInt32, &four, 1}}, &f).empty());
  CHECK(f.width == 4 && f.activation == "silu");
  CHECK(parse({{"width", FieldType::kInt64, &four64, 1}, {"activation", FieldType::kChar, silu, 5}}, &f).empty());
  CHECK(f.width == 4);
  CHECK(parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kChar, silu, 4}}).empty());  // no NUL

  // Missing, wrong type, wrong length, out of range, unknown, duplicated: each names the field.
  std::string e = parse({});
  CHECK_MSG(starts_with(e, "field 'width': missing") && contains(e, "[2, 8]"), e);
  e = parse({{"width", FieldType::kFloat32, &four_f, 1}});
  CHECK_MSG(starts_with(e, "field 'width': expected one integer (INT32) in [2, 8], got FLOAT32"), e);
  e = parse({{"width", FieldType::kInt32, &four, 0}});
  CHECK_MSG(starts_with(e, "field 'width'") && contains(e, "got 0 values"), e);
  for (int32_t bad : {1, 9, -4}) {
    e = parse({{"width", FieldType::kInt32, &bad, 1}});
    CHECK_MSG(starts_with(e, "field 'width'") && contains(e, "got " + std::to_string(bad)), e);
  }
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kChar, relu, 5}});
  CHECK_MSG(starts_with(e, "field 'activation': expected a string (CHAR) of \"silu\", got \"relu\""), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'activation'") && contains(e, "got INT32"), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"kernel_size", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'kernel_size': unknown (expected only: width, activation)"), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"width", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'width': given more than once"), e);
}

void test_schema_and_serialisation() {
  const std::vector<FieldValue> schema = causal_conv1d_field_schema();
  CHECK(schema.size() == 2);
  CHECK(schema[0].name == "width" && schema[0].type == FieldType::kInt32);
  CHECK(schema[1].name == "activation" && schema[1].type == FieldType::kChar);

  for (int32_t width = kConvMinWidth; width <= kConvMaxWidth; ++width) {
    CausalConv1dFields in;
    in.width = width;
    const std::vector<FieldValue> stored = serialize_causal_conv1d_fields(in);
    std::vector<FieldView> views;
    for (const FieldValue& v : stored) views.push_back(view_of(v));
    CausalConv1dFields out;
    CHECK(parse(views, &out).empty());
    CHECK(out.width == width && out.activation == "silu");
  }
  const FieldValue s = FieldValue::string("activation", "silu");
  CHECK(s.length == 5 && s.bytes.back() == '\0');  // the ONNX parser's convention
}

void test_shapes() {
  CausalConv1dFields f;
  f.width = 4;
  // x [T, C], weight [C, W], pool [S, C, W-1], slots [B], cu_seqlens [B+1], has_initial_state [B].
  CHECK(check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}, {2}}, f).empty());
  CHECK(check_causal_conv1d_shapes({{-1, 64}, {64, 4}, {-1, 64, 3}, {-1}, {-1}, {-1}}, f).empty());  // build time
  CHECK(check_causal_conv1d_shapes({{-1, -1}, {-1, -1}, {-1, -1, -1}, {-1}, {-1}, {-1}}, f).empty());

  std::string e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}}, f);
  CHECK_MSG(starts_with(e, "inputs: expected 6"), e);
  e = check_causal_conv1d_shapes({{10, 64, 1}, {64, 4}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "x: expected rank 2"), e);
  e = check_causal_conv1d_shapes({{10, 60}, {60, 4}, {5, 60, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "x: channels (dim 1) must be a multiple of 8"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {32, 4}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "weight / conv_state_pool: channels differ"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 3}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "weight: dim 1 must equal the field width = 4"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 4}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "conv_state_pool: dim 2 must be width - 1 = 3"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {2}, {2}}, f);
  CHECK_MSG(starts_with(e, "cu_seqlens: must have B + 1 = 3"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}, {3}}, f);
  CHECK_MSG(starts_with(e, "has_initial_state: must have one entry per sequence"), e);
}

void test_dtypes_and_aliasing() {
  const ElementType expected[] = {ElementType::kBF16,  ElementType::kBF16, ElementType::kBF16, ElementType::kInt32,
                                  ElementType::kInt32, ElementType::kBool, ElementType::kBF16, ElementType::kBF16};
  for (int32_t pos = 0; pos < kCausalConv1dInputs + kCausalConv1dOutputs; ++pos) {
    CHECK_MSG(causal_conv1d_dtype(pos) == expected[pos], causal_conv1d_tensor_name(pos));
  }
  CHECK(causal_conv1d_output_shape_source(0) == kConvX);
  CHECK(causal_conv1d_output_shape_source(1) == kConvStatePool);
  CHECK(causal_conv1d_aliased_input(0) == -1);
  CHECK(causal_conv1d_aliased_input(1) == kConvStatePool);
  CHECK(causal_conv1d_workspace_bytes() == 0);
  CHECK(std::string(kCausalConv1dName) == "Qwen35CausalConv1d");
}

}  // namespace

int main() {
  test_fields();
  test_schema_and_serialisation();
  test_shapes();
  test_dtypes_and_aliasing();
  return qwen35_trt::test::report();
}
