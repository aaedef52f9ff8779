// What every plugin of the library shares, in plain C++: the namespace (the ONNX node's domain),
// the version, and the element types of the tensors (the adapters map them to nvinfer1::DataType).
#pragma once

namespace qwen35_trt::plugins {

// Every plugin of the library lives in this namespace (the ONNX node's domain) at version "1".
inline constexpr const char* kPluginNamespace = "qwen35_trt";
inline constexpr const char* kPluginVersion = "1";

enum class ElementType { kBF16, kFloat32, kInt32, kBool };

inline const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kBF16: return "bf16";
    case ElementType::kFloat32: return "fp32";
    case ElementType::kInt32: return "int32";
    case ElementType::kBool: return "bool";
  }
  return "?";
}

}  // namespace qwen35_trt::plugins
