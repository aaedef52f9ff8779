// PluginField <-> FieldView / FieldValue (see plugin_fields.h).
#include "plugin_fields.h"

namespace qwen35_trt::plugins {
namespace {

FieldType from_trt(nvinfer1::PluginFieldType t) {
  switch (t) {
    case nvinfer1::PluginFieldType::kINT32: return FieldType::kInt32;
    case nvinfer1::PluginFieldType::kINT64: return FieldType::kInt64;
    case nvinfer1::PluginFieldType::kFLOAT32: return FieldType::kFloat32;
    case nvinfer1::PluginFieldType::kCHAR: return FieldType::kChar;
    default: return FieldType::kOther;
  }
}

nvinfer1::PluginFieldType to_trt(FieldType t) {
  switch (t) {
    case FieldType::kInt32: return nvinfer1::PluginFieldType::kINT32;
    case FieldType::kInt64: return nvinfer1::PluginFieldType::kINT64;
    case FieldType::kFloat32: return nvinfer1::PluginFieldType::kFLOAT32;
    case FieldType::kChar: return nvinfer1::PluginFieldType::kCHAR;
    default: return nvinfer1::PluginFieldType::kUNKNOWN;
  }
}

}  // namespace

std::vector<FieldView> field_views(const nvinfer1::PluginFieldCollection* fc) {
  std::vector<FieldView> views;
  if (fc == nullptr || fc->fields == nullptr) return views;
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    const nvinfer1::PluginField& f = fc->fields[i];
    views.push_back(FieldView{f.name, from_trt(f.type), f.data, f.length});
  }
  return views;
}

std::vector<nvinfer1::PluginField> plugin_fields(const std::vector<FieldValue>& values) {
  std::vector<nvinfer1::PluginField> fields;
  for (const FieldValue& v : values) {
    fields.emplace_back(v.name.c_str(), v.bytes.empty() ? nullptr : v.bytes.data(), to_trt(v.type), v.length);
  }
  return fields;
}

}  // namespace qwen35_trt::plugins
