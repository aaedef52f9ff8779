// Plugin fields as plain C++: the TensorRT plugin layer turns each nvinfer1::PluginField into a
// FieldView and back, so the schema checks and the serialisation are testable without TensorRT.
//
// The ONNX parser hands node attributes over as they are (INT -> 32-bit int, FLOAT -> 32-bit
// float, STRING -> chars including the NUL), whatever the creator declares, so every reader here
// checks the type, the length and the range itself and returns a message naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qwen35_trt::plugins {

// The subset of nvinfer1::PluginFieldType the plugins read or write (kOther: anything else).
enum class FieldType { kInt32, kInt64, kFloat32, kChar, kOther };

const char* field_type_name(FieldType type);

// A field as the plugin receives it: borrowed name and data.
struct FieldView {
  const char* name = nullptr;
  FieldType type = FieldType::kOther;
  const void* data = nullptr;
  int32_t length = 0;  // elements (chars for kChar)
};

// A field the plugin owns (what getFieldsToSerialize and getFieldNames hand out).
struct FieldValue {
  std::string name;
  FieldType type = FieldType::kOther;
  std::vector<unsigned char> bytes;  // the value; empty in a schema entry
  int32_t length = 0;

  static FieldValue int32(const std::string& name, int32_t value);
  static FieldValue float32(const std::string& name, float value);
  static FieldValue string(const std::string& name, const std::string& value);  // stored with its NUL
};

FieldView view_of(const FieldValue& value);

// The field called `name`, or nullptr. Duplicates are an error (the first message names it).
const FieldView* find_field(const std::vector<FieldView>& fields, const std::string& name, std::string* error);

// Names not in `known`: an error naming the first one, else "".
std::string check_known_fields(const std::vector<FieldView>& fields, const std::vector<std::string>& known);

// One integer (kInt32, or kInt64 from a producer that keeps ONNX's width) in [lo, hi].
std::string read_int_field(const FieldView& field, int64_t lo, int64_t hi, int64_t* out);

// One finite float (kFloat32, what the ONNX parser makes of a FLOAT attribute) in the open
// interval (lo, hi): the scale-like fields have no meaningful closed bound. kClosed makes it
// [lo, hi), for a field whose lower bound is itself a valid value (an epsilon of 0).
enum class LowerBound { kOpen, kClosed };
std::string read_float_field(const FieldView& field, double lo, double hi, float* out,
                             LowerBound lower = LowerBound::kOpen);

// A string (kChar; the NUL the ONNX parser includes is optional), one of `allowed`.
std::string read_string_field(const FieldView& field, const std::vector<std::string>& allowed, std::string* out);

}  // namespace qwen35_trt::plugins
