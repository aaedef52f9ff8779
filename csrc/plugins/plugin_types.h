// What every plugin of the library shares, in plain C++: the namespace (the ONNX node's domain),
// the version, and the element types of the tensors (the adapters map them to nvinfer1::DataType).
#pragma once

namespace qwen35_trt::plugins {

// Every plugin of the library lives in this namespace (the ONNX node's domain) at version "1".
inline constexpr const char* kPluginNamespace = "qwen35_trt";
inline constexpr const char* kPluginVersion = "1";

// kInt8 carries raw bytes (packed E2M1 pairs, FP8 E4M3 block scales), which the kernels read as
// bytes: TensorRT-RTX 1.7 refuses UINT8 plugin tensors at build time ("UInt8 datatype formats are
// not supported") and its ONNX parser widens UINT8 initialisers to INT32; see docs/plugins.md.
enum class ElementType { kBF16, kFloat32, kInt32, kBool, kInt8 };

inline const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kBF16: return "bf16";
    case ElementType::kFloat32: return "fp32";
    case ElementType::kInt32: return "int32";
    case ElementType::kBool: return "bool";
    case ElementType::kInt8: return "int8";
  }
  return "?";
}

}  // namespace qwen35_trt::plugins
