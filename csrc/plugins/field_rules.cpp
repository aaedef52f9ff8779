// Plugin field readers and owned field values (see field_rules.h).
#include "field_rules.h"

#include <cmath>
#include <cstring>
#include <sstream>

namespace qwen35_trt::plugins {

const char* field_type_name(FieldType type) {
  switch (type) {
    case FieldType::kInt32: return "INT32";
    case FieldType::kInt64: return "INT64";
    case FieldType::kFloat32: return "FLOAT32";
    case FieldType::kChar: return "CHAR";
    default: return "an unsupported type";
  }
}

FieldValue FieldValue::int32(const std::string& name, int32_t value) {
  FieldValue f;
  f.name = name;
  f.type = FieldType::kInt32;
  f.bytes.resize(sizeof(value));
  std::memcpy(f.bytes.data(), &value, sizeof(value));
  f.length = 1;
  return f;
}

FieldValue FieldValue::float32(const std::string& name, float value) {
  FieldValue f;
  f.name = name;
  f.type = FieldType::kFloat32;
  f.bytes.resize(sizeof(value));
  std::memcpy(f.bytes.data(), &value, sizeof(value));
  f.length = 1;
  return f;
}

FieldValue FieldValue::string(const std::string& name, const std::string& value) {
  FieldValue f;
  f.name = name;
  f.type = FieldType::kChar;
  f.bytes.assign(value.begin(), value.end());
  f.bytes.push_back('\0');  // the ONNX parser's convention: the length counts the NUL
  f.length = static_cast<int32_t>(f.bytes.size());
  return f;
}

FieldView view_of(const FieldValue& value) {
  return FieldView{value.name.c_str(), value.type, value.bytes.empty() ? nullptr : value.bytes.data(), value.length};
}

const FieldView* find_field(const std::vector<FieldView>& fields, const std::string& name, std::string* error) {
  const FieldView* found = nullptr;
  for (const FieldView& f : fields) {
    if (f.name == nullptr || name != f.name) continue;
    if (found != nullptr) {
      *error = "field '" + name + "': given more than once";
      return nullptr;
    }
    found = &f;
  }
  return found;
}

std::string check_known_fields(const std::vector<FieldView>& fields, const std::vector<std::string>& known) {
  for (const FieldView& f : fields) {
    if (f.name == nullptr) return "a field without a name";
    bool ok = false;
    for (const std::string& k : known) ok = ok || k == f.name;
    if (!ok) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      return "field '" + std::string(f.name) + "': unknown (expected only: " + list + ")";
    }
  }
  return "";
}

std::string read_int_field(const FieldView& field, int64_t lo, int64_t hi, int64_t* out) {
  const std::string what = "field '" + std::string(field.name) + "': expected one integer (INT32) in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "], got ";
  if (field.type != FieldType::kInt32 && field.type != FieldType::kInt64) {
    return what + field_type_name(field.type);
  }
  if (field.length != 1 || field.data == nullptr) return what + std::to_string(field.length) + " values";
  int64_t v = 0;
  if (field.type == FieldType::kInt32) {
    int32_t v32 = 0;
    std::memcpy(&v32, field.data, sizeof(v32));
    v = v32;
  } else {
    std::memcpy(&v, field.data, sizeof(v));
  }
  if (v < lo || v > hi) return what + std::to_string(v);
  *out = v;
  return "";
}

std::string read_float_field(const FieldView& field, double lo, double hi, float* out, LowerBound lower) {
  // Bounds and values printed in the shortest form that reads back the same ("0.125", not "0.125000").
  auto str = [](double x) {
    std::ostringstream os;
    os << x;
    return os.str();
  };
  const bool closed = lower == LowerBound::kClosed;
  const std::string what = "field '" + std::string(field.name) + "': expected one finite float (FLOAT32) in " +
                           (closed ? "[" : "(") + str(lo) + ", " + str(hi) + "), got ";
  if (field.type != FieldType::kFloat32) return what + field_type_name(field.type);
  if (field.length != 1 || field.data == nullptr) return what + std::to_string(field.length) + " values";
  float v = 0.0f;
  std::memcpy(&v, field.data, sizeof(v));
  if (!std::isfinite(v) || !(closed ? v >= lo : v > lo) || !(v < hi)) return what + str(v);
  *out = v;
  return "";
}

std::string read_string_field(const FieldView& field, const std::vector<std::string>& allowed, std::string* out) {
  std::string list;
  for (const std::string& a : allowed) list += (list.empty() ? "\"" : ", \"") + a + "\"";
  const std::string what = "field '" + std::string(field.name) + "': expected a string (CHAR) of " + list + ", got ";
  if (field.type != FieldType::kChar) return what + field_type_name(field.type);
  if (field.length < 0 || (field.length > 0 && field.data == nullptr)) return what + "no data";
  const char* chars = static_cast<const char*>(field.data);
  std::string value(chars, chars + field.length);
  if (const auto nul = value.find('\0'); nul != std::string::npos) value.resize(nul);
  for (const std::string& a : allowed) {
    if (value == a) {
      *out = value;
      return "";
    }
  }
  return what + "\"" + value + "\"";
}

}  // namespace qwen35_trt::plugins
