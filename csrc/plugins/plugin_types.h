// What every plugin of the library shares, in plain C++: the namespace (the ONNX node's domain),
// the version, and the element types of the tensors (the adapters map them to nvinfer1::DataType).
#pragma once

namespace qwen35_trt::plugins {

// Every plugin of the library lives in this namespace (the ONNX node's domain) at version "1".
inline constexpr const char* kPluginNamespace = "qwen35_trt";
inline constexpr const char* kPluginVersion = "1";

// kUInt8 also carries FP8 (E4M3) block-scale bytes: TensorRT-RTX's ONNX parser has no FP8 input
// type a plugin can be handed as raw bytes, and the kernels read the scales as bytes anyway.
enum class ElementType { kBF16, kFloat32, kInt32, kBool, kUInt8 };

inline const char* element_type_name(ElementType type) {
  switch (type) {
    case ElementType::kBF16: return "bf16";
    case ElementType::kFloat32: return "fp32";
    case ElementType::kInt32: return "int32";
    case ElementType::kBool: return "bool";
    case ElementType::kUInt8: return "uint8";
  }
  return "?";
}

}  // namespace qwen35_trt::plugins
