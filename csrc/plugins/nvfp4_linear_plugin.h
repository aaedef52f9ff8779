// The Nvfp4Linear TensorRT plugin (IPluginV3: OneCore + OneBuildV2 + OneRuntime; nothing aliased)
// and its creator. An adapter only: the contract is in nvfp4_linear_rules.h, the math in
// qwen35_trt::kernels::nvfp4_linear (the launcher the Python binding calls).
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "nvfp4_linear_rules.h"
#include "plugin_base.h"

namespace qwen35_trt::plugins {

// The rules the shared plugin plumbing (plugin_base.h) runs on.
struct Nvfp4LinearOp {
  using Fields = Nvfp4LinearFields;
  static constexpr const char* kName = kNvfp4LinearName;
  static constexpr int32_t kOutputs = kNvfp4LinearOutputs;
  static std::string counts_error(const Fields& fields, int32_t nbInputs, int32_t nbOutputs);
  static bool type_ok(int32_t pos, nvinfer1::DataType type, const Fields& fields);
  static std::string type_error(int32_t pos, nvinfer1::DataType got, const Fields& fields);
  static nvinfer1::DataType output_type(int32_t output, int32_t nbInputs, const Fields& fields);
  static std::string check_shapes(const std::vector<std::vector<int64_t>>& dims, const Fields& fields) {
    return check_nvfp4_linear_shapes(dims, fields);
  }
  static void output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            const Fields& fields, nvinfer1::IExprBuilder& exprs);
  static int32_t aliased_input(int32_t ) { return -1; }
  static std::vector<FieldValue> schema() { return nvfp4_linear_field_schema(); }
  static std::string parse(const std::vector<FieldView>& views, Fields* out) { return parse_nvfp4_linear_fields(views, out); }
  static std::vector<FieldValue> serialize(const Fields& fields) { return serialize_nvfp4_linear_fields(fields); }
};

class Nvfp4LinearPlugin final : public RulesPlugin<Nvfp4LinearPlugin, Nvfp4LinearOp> {
 public:
  using RulesPlugin::RulesPlugin;

  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
};

using Nvfp4LinearCreator = RulesCreator<Nvfp4LinearPlugin, Nvfp4LinearOp>;

}  // namespace qwen35_trt::plugins
