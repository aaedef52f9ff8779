// ElementType <-> nvinfer1::DataType for the adapters, and dtype names for their error messages.
#pragma once

#include <NvInferRuntime.h>

#include <string>

#include "plugin_types.h"

namespace qwen35_trt::plugins {

inline nvinfer1::DataType to_trt(ElementType t) {
  switch (t) {
    case ElementType::kFloat32: return nvinfer1::DataType::kFLOAT;
    case ElementType::kInt32: return nvinfer1::DataType::kINT32;
    case ElementType::kBool: return nvinfer1::DataType::kBOOL;
    case ElementType::kInt8: return nvinfer1::DataType::kINT8;
    case ElementType::kBF16: break;
  }
  return nvinfer1::DataType::kBF16;
}

inline const char* dtype_name(nvinfer1::DataType t) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return "fp32";
    case nvinfer1::DataType::kHALF: return "fp16";
    case nvinfer1::DataType::kBF16: return "bf16";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kBOOL: return "bool";
    case nvinfer1::DataType::kUINT8: return "uint8";
    case nvinfer1::DataType::kFP8: return "fp8";
    default: return "another TensorRT dtype";
  }
}

// "<tensor>: expected <want>, got <dtype>", with why int8 where the tensor carries raw bytes.
inline std::string type_error_message(const char* tensor, const std::string& want, nvinfer1::DataType got,
                                      bool byte_carrier = false) {
  return std::string(tensor) + ": expected " + want + ", got " + dtype_name(got) +
         (byte_carrier ? " (int8 carries the raw bytes: TensorRT-RTX takes no uint8 or fp8 plugin tensor here)" : "");
}

}  // namespace qwen35_trt::plugins
