// Translation between nvinfer1::PluginField and the plain-C++ FieldView / FieldValue.
#pragma once

#include <NvInferRuntime.h>

#include <vector>

#include "field_rules.h"

namespace qwen35_trt::plugins {

// The fields of `fc` as views (an empty list for a null collection).
std::vector<FieldView> field_views(const nvinfer1::PluginFieldCollection* fc);

// PluginFields pointing into `values` (which must outlive them).
std::vector<nvinfer1::PluginField> plugin_fields(const std::vector<FieldValue>& values);

}  // namespace qwen35_trt::plugins
