// The CausalConv1d TensorRT plugin (IPluginV3: OneCore + OneBuildV2 for the aliased conv-state
// pool + OneRuntime) and its creator. An adapter only: the contract is in causal_conv1d_rules.h,
// the math in qwen35_trt::kernels::causal_conv1d.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "causal_conv1d_rules.h"
#include "plugin_base.h"

namespace qwen35_trt::plugins {

// The rules the shared plugin plumbing (plugin_base.h) runs on.
struct CausalConv1dOp {
  using Fields = CausalConv1dFields;
  static constexpr const char* kName = kCausalConv1dName;
  static constexpr int32_t kOutputs = kCausalConv1dOutputs;
  static std::string counts_error(const Fields& fields, int32_t nbInputs, int32_t nbOutputs);
  static bool type_ok(int32_t pos, nvinfer1::DataType type, const Fields& fields);
  static std::string type_error(int32_t pos, nvinfer1::DataType got, const Fields& fields);
  static nvinfer1::DataType output_type(int32_t output, int32_t nbInputs, const Fields& fields);
  static std::string check_shapes(const std::vector<std::vector<int64_t>>& dims, const Fields& fields) {
    return check_causal_conv1d_shapes(dims, fields);
  }
  static void output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            const Fields& fields, nvinfer1::IExprBuilder& exprs);
  static int32_t aliased_input(int32_t output) { return causal_conv1d_aliased_input(output); }
  static std::vector<FieldValue> schema() { return causal_conv1d_field_schema(); }
  static std::string parse(const std::vector<FieldView>& views, Fields* out) { return parse_causal_conv1d_fields(views, out); }
  static std::vector<FieldValue> serialize(const Fields& fields) { return serialize_causal_conv1d_fields(fields); }
};

class CausalConv1dPlugin final : public RulesPlugin<CausalConv1dPlugin, CausalConv1dOp> {
 public:
  using RulesPlugin::RulesPlugin;

  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
};

using CausalConv1dCreator = RulesCreator<CausalConv1dPlugin, CausalConv1dOp>;

}  // namespace qwen35_trt::plugins
