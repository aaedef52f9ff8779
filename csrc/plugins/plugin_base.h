// What every plugin of the library does the same way, driven by its rules: the IPluginV3
// capability plumbing, dtype / shape / format checks, aliasing, serialisation and the creator.
// A plugin supplies an `Op` traits struct (its name, fields and rules, below) and implements only
// getWorkspaceSize and enqueue, the parts that talk to its kernel launcher.
//
// struct Op {
//   using Fields = ...;
//   static constexpr const char* kName;
//   static constexpr int32_t kOutputs;
//   static std::string counts_error(const Fields&, int32_t nbInputs, int32_t nbOutputs);  // "" when right
//   static bool type_ok(int32_t pos, nvinfer1::DataType, const Fields&);  // inputs, then outputs
//   static std::string type_error(int32_t pos, nvinfer1::DataType got, const Fields&);  // an input's message
//   static nvinfer1::DataType output_type(int32_t output, int32_t nbInputs, const Fields&);
//   static std::string check_shapes(const std::vector<std::vector<int64_t>>& dims, const Fields&);  // -1: unknown
//   static void output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
//                             const Fields&, nvinfer1::IExprBuilder&);  // constants through the builder
//   static int32_t aliased_input(int32_t output);  // -1: not aliased
//   static std::vector<FieldValue> schema();
//   static std::string parse(const std::vector<FieldView>&, Fields*);
//   static std::vector<FieldValue> serialize(const Fields&);
// };
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <exception>
#include <string>
#include <vector>

#include "plugin_fields.h"
#include "plugin_logging.h"
#include "plugin_types.h"

namespace qwen35_trt::plugins {

template <class Derived, class Op>
class RulesPlugin : public nvinfer1::IPluginV3,
                    public nvinfer1::IPluginV3OneCore,
                    public nvinfer1::IPluginV3OneBuildV2,
                    public nvinfer1::IPluginV3OneRuntime {
 public:
  using Fields = typename Op::Fields;

  explicit RulesPlugin(const Fields& fields) : fields_(fields) {}
  RulesPlugin(const RulesPlugin& other) : fields_(other.fields_) {}
  RulesPlugin& operator=(const RulesPlugin&) = delete;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
    switch (type) {
      case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
      case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
      case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }
  nvinfer1::IPluginV3* clone() noexcept override {
    try {
      return new Derived(static_cast<const Derived&>(*this));
    } catch (const std::exception& e) {
      log(std::string("clone: ") + e.what());
      return nullptr;
    }
  }

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override { return Op::kName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuildV2
  int32_t getNbOutputs() const noexcept override { return Op::kOutputs; }

  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override {
    if (!counts_ok(nbInputs, nbOutputs)) return -1;
    // Refusing here names the tensor; supportsFormatCombination alone would only fail the build.
    for (int32_t i = 0; i < nbInputs; ++i) {
      if (!Op::type_ok(i, inputTypes[i], fields_)) {
        log(Op::type_error(i, inputTypes[i], fields_));
        return -1;
      }
    }
    for (int32_t o = 0; o < nbOutputs; ++o) outputTypes[o] = Op::output_type(o, nbInputs, fields_);
    return 0;
  }

  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs*, int32_t,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprs) noexcept override {
    if (!counts_ok(nbInputs, nbOutputs)) return -1;
    // The dims known at this point (constants) are checked now, the rest in configurePlugin.
    std::vector<std::vector<int64_t>> known(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i) {
      for (int32_t k = 0; k < inputs[i].nbDims; ++k) {
        const nvinfer1::IDimensionExpr* e = inputs[i].d[k];
        known[i].push_back(e != nullptr && e->isConstant() ? e->getConstantValue() : -1);
      }
    }
    const std::string e = Op::check_shapes(known, fields_);
    if (!e.empty()) {
      log(e);
      return -1;
    }
    Op::output_shapes(inputs, outputs, nbOutputs, fields_, exprs);
    return 0;
  }

  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override {
    if (!Op::counts_error(fields_, nbInputs, nbOutputs).empty() || pos < 0 || pos >= nbInputs + nbOutputs) return false;
    const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
    return d.format == nvinfer1::TensorFormat::kLINEAR && Op::type_ok(pos, d.type, fields_);
  }

  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc*, int32_t nbOutputs) noexcept override {
    try {
      if (!counts_ok(nbInputs, nbOutputs)) return -1;
      std::vector<const nvinfer1::Dims*> dims;
      for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(&in[i].desc.dims);  // -1 where dynamic
      return check_shapes(dims.data(), nbInputs) ? 0 : -1;
    } catch (const std::exception& e) {
      log(std::string("configurePlugin: ") + e.what());
      return -1;
    }
  }

  int32_t getAliasedInput(int32_t outputIndex) noexcept override { return Op::aliased_input(outputIndex); }

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc*,
                        int32_t nbOutputs) noexcept override {
    try {
      if (!counts_ok(nbInputs, nbOutputs)) return -1;
      std::vector<const nvinfer1::Dims*> dims;
      for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(&in[i].dims);
      return check_shapes(dims.data(), nbInputs) ? 0 : -1;
    } catch (const std::exception& e) {
      log(std::string("onShapeChange: ") + e.what());
      return -1;
    }
  }

  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override {
    return clone();  // no per-context resources
  }

  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override {
    try {
      serialized_ = Op::serialize(fields_);
      plugin_fields_ = plugin_fields(serialized_);
      collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
      collection_.fields = plugin_fields_.data();
      return &collection_;
    } catch (const std::exception& e) {
      log(std::string("getFieldsToSerialize: ") + e.what());
      return nullptr;
    }
  }

 protected:
  static void log(const std::string& message) { log_error(Op::kName, message); }

  // The end of every enqueue: the launcher's host-side check (`invalid`, "" when the parameters are
  // valid), then the launch; each failure is logged, naming the launcher, and gives -1.
  template <class Launch>
  static int32_t launch(const char* launcher, const std::string& invalid, Launch&& run) {
    if (!invalid.empty()) {
      log("enqueue: " + invalid);
      return -1;
    }
    const cudaError_t status = run();
    if (status != cudaSuccess) {
      // Every launcher answers cudaErrorInvalidValue for parameters it refuses (shapes, strides, alignment).
      log(std::string("enqueue: ") + launcher + " failed: " + cudaGetErrorString(status) +
          (status == cudaErrorInvalidValue ? " (the launcher refused its parameters: shapes, strides or alignment)" : ""));
      return -1;
    }
    return 0;
  }

  bool counts_ok(int32_t nbInputs, int32_t nbOutputs) const {
    const std::string e = Op::counts_error(fields_, nbInputs, nbOutputs);
    if (!e.empty()) log(e);
    return e.empty();
  }

  // Logs and returns false when the shapes break the contract.
  bool check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const {
    std::vector<std::vector<int64_t>> dims;
    for (int32_t i = 0; i < nbInputs; ++i) {
      const nvinfer1::Dims& d = *inputs[i];
      dims.emplace_back(d.d, d.d + (d.nbDims > 0 ? d.nbDims : 0));
    }
    const std::string e = Op::check_shapes(dims, fields_);
    if (!e.empty()) log(e);
    return e.empty();
  }

  Fields fields_;

 private:
  // Storage behind getFieldsToSerialize (valid until the next call or destruction).
  std::vector<FieldValue> serialized_;
  std::vector<nvinfer1::PluginField> plugin_fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

template <class Plugin, class Op>
class RulesCreator final : public nvinfer1::IPluginCreatorV3One {
 public:
  RulesCreator() : schema_(Op::schema()), plugin_fields_(plugin_fields(schema_)) {
    collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
    collection_.fields = plugin_fields_.data();
  }

  nvinfer1::IPluginV3* createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase) noexcept override {
    try {
      typename Op::Fields fields;
      const std::string e = Op::parse(field_views(fc), &fields);
      if (!e.empty()) {
        log_error(Op::kName, e);
        return nullptr;
      }
      return new Plugin(fields);
    } catch (const std::exception& e) {
      log_error(Op::kName, std::string("createPlugin: ") + e.what());
      return nullptr;
    }
  }
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override { return &collection_; }
  const char* getPluginName() const noexcept override { return Op::kName; }
  const char* getPluginVersion() const noexcept override { return kPluginVersion; }
  const char* getPluginNamespace() const noexcept override { return kPluginNamespace; }

 private:
  std::vector<FieldValue> schema_;
  std::vector<nvinfer1::PluginField> plugin_fields_;
  nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace qwen35_trt::plugins
