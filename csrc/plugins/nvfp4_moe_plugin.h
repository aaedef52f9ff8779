// The Nvfp4MoE TensorRT plugin (IPluginV3: OneCore + OneBuildV2 + OneRuntime; nothing aliased)
// and its creator. An adapter only: the contract is in nvfp4_moe_rules.h, the math in
// qwen35_trt::kernels::nvfp4_moe (the launcher the Python binding calls).
#pragma once

#include <NvInferRuntime.h>

#include <vector>

#include "nvfp4_moe_rules.h"

namespace qwen35_trt::plugins {

class Nvfp4MoePlugin final : public nvinfer1::IPluginV3,
                                 public nvinfer1::IPluginV3OneCore,
                                 public nvinfer1::IPluginV3OneBuildV2,
                                 public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit Nvfp4MoePlugin(const Nvfp4MoeFields& fields) : fields_(fields) {}
  Nvfp4MoePlugin(const Nvfp4MoePlugin& other) : fields_(other.fields_) {}
  Nvfp4MoePlugin& operator=(const Nvfp4MoePlugin&) = delete;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override { return kNvfp4MoeName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuildV2
  int32_t getNbOutputs() const noexcept override { return kNvfp4MoeOutputs; }
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;
  int32_t getAliasedInput(int32_t outputIndex) noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

 private:
  // Logs and returns false when the shapes break the contract.
  bool check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const;

  Nvfp4MoeFields fields_;
  // Storage behind getFieldsToSerialize (valid until the next call or destruction).
  std::vector<FieldValue> serialized_;
  std::vector<nvinfer1::PluginField> plugin_fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

class Nvfp4MoeCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  Nvfp4MoeCreator();
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override { return kNvfp4MoeName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

 private:
  std::vector<FieldValue> schema_;
  std::vector<nvinfer1::PluginField> plugin_fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace qwen35_trt::plugins
