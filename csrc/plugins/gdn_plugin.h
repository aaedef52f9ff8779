// The GatedDeltaNet TensorRT plugin (IPluginV3: OneCore + OneBuildV2 for the aliased fp32 state
// pool + OneRuntime) and its creator. An adapter only: the contract (including which kernel an
// enqueue runs) is in gdn_rules.h, the math in qwen35_trt::kernels::gdn_chunk_prefill and
// gdn_recurrent.
#pragma once

#include <NvInferRuntime.h>

#include <string>
#include <vector>

#include "gdn_rules.h"
#include "plugin_base.h"

namespace qwen35_trt::plugins {

// The rules the shared plugin plumbing (plugin_base.h) runs on.
struct GatedDeltaNetOp {
  using Fields = GatedDeltaNetFields;
  static constexpr const char* kName = kGatedDeltaNetName;
  static constexpr int32_t kOutputs = kGatedDeltaNetOutputs;
  static std::string counts_error(const Fields& fields, int32_t nbInputs, int32_t nbOutputs);
  static bool type_ok(int32_t pos, nvinfer1::DataType type, const Fields& fields);
  static std::string type_error(int32_t pos, nvinfer1::DataType got, const Fields& fields);
  static nvinfer1::DataType output_type(int32_t output, int32_t nbInputs, const Fields& fields);
  static std::string check_shapes(const std::vector<std::vector<int64_t>>& dims, const Fields& fields) {
    return check_gated_delta_net_shapes(dims, fields);
  }
  static void output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            const Fields& fields, nvinfer1::IExprBuilder& exprs);
  static int32_t aliased_input(int32_t output) { return gated_delta_net_aliased_input(output); }
  static std::vector<FieldValue> schema() { return gated_delta_net_field_schema(); }
  static std::string parse(const std::vector<FieldView>& views, Fields* out) { return parse_gated_delta_net_fields(views, out); }
  static std::vector<FieldValue> serialize(const Fields& fields) { return serialize_gated_delta_net_fields(fields); }
};

class GatedDeltaNetPlugin final : public RulesPlugin<GatedDeltaNetPlugin, GatedDeltaNetOp> {
 public:
  using RulesPlugin::RulesPlugin;

  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
};

using GatedDeltaNetCreator = RulesCreator<GatedDeltaNetPlugin, GatedDeltaNetOp>;

}  // namespace qwen35_trt::plugins
