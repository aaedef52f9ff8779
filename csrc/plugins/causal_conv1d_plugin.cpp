// The CausalConv1d TensorRT adapter (see causal_conv1d_plugin.h): fields, dtypes, shapes and
// aliasing come from causal_conv1d_rules; enqueue calls the same launcher as the Python binding.
#include "causal_conv1d_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "plugin_fields.h"
#include "plugin_logging.h"
#include "qwen35_trt/kernels/gdn.h"

namespace qwen35_trt::plugins {
namespace {

using nvinfer1::DataType;

void log(const std::string& message) { log_error(kCausalConv1dName, message); }

bool counts_ok(int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == kCausalConv1dInputs && nbOutputs == kCausalConv1dOutputs) return true;
  log("expected 6 inputs (x, weight, conv_state_pool, slots, cu_seqlens, has_initial_state) and 2 outputs, got " +
      std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
  return false;
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) {
  return std::vector<int64_t>(d.d, d.d + (d.nbDims > 0 ? d.nbDims : 0));
}

}  // namespace

nvinfer1::IPluginCapability* CausalConv1dPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* CausalConv1dPlugin::clone() noexcept {
  try {
    return new CausalConv1dPlugin(*this);
  } catch (const std::exception& e) {
    log(std::string("clone: ") + e.what());
    return nullptr;
  }
}

int32_t CausalConv1dPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                               int32_t nbInputs) const noexcept {
  if (!counts_ok(nbInputs, nbOutputs)) return -1;
  // Refusing here names the tensor; supportsFormatCombination alone would only fail the build.
  for (int32_t i = 0; i < nbInputs; ++i) {
    if (inputTypes[i] != to_trt(causal_conv1d_dtype(i))) {
      log(std::string(causal_conv1d_tensor_name(i)) + ": expected " + element_type_name(causal_conv1d_dtype(i)) +
          ", got " + dtype_name(inputTypes[i]));
      return -1;
    }
  }
  for (int32_t o = 0; o < nbOutputs; ++o) outputTypes[o] = to_trt(causal_conv1d_dtype(kCausalConv1dInputs + o));
  return 0;
}

int32_t CausalConv1dPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                            const nvinfer1::DimsExprs*, int32_t, nvinfer1::DimsExprs* outputs,
                                            int32_t nbOutputs, nvinfer1::IExprBuilder&) noexcept {
  if (!counts_ok(nbInputs, nbOutputs)) return -1;
  // The dims known at this point (constants) are checked now, the rest in configurePlugin.
  std::vector<std::vector<int64_t>> known(nbInputs);
  for (int32_t i = 0; i < nbInputs; ++i) {
    for (int32_t k = 0; k < inputs[i].nbDims; ++k) {
      const nvinfer1::IDimensionExpr* e = inputs[i].d[k];
      known[i].push_back(e != nullptr && e->isConstant() ? e->getConstantValue() : -1);
    }
  }
  const std::string e = check_causal_conv1d_shapes(known, fields_);
  if (!e.empty()) {
    log(e);
    return -1;
  }
  for (int32_t o = 0; o < nbOutputs; ++o) outputs[o] = inputs[causal_conv1d_output_shape_source(o)];
  return 0;
}

bool CausalConv1dPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kCausalConv1dInputs || nbOutputs != kCausalConv1dOutputs || pos < 0 ||
      pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
  return d.format == nvinfer1::TensorFormat::kLINEAR && d.type == to_trt(causal_conv1d_dtype(pos));
}

bool CausalConv1dPlugin::check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const {
  std::vector<std::vector<int64_t>> dims;
  for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(to_vector(*inputs[i]));
  const std::string e = check_causal_conv1d_shapes(dims, fields_);
  if (!e.empty()) log(e);
  return e.empty();
}

int32_t CausalConv1dPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                            const nvinfer1::DynamicPluginTensorDesc*, int32_t nbOutputs) noexcept {
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

size_t CausalConv1dPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc*, int32_t,
                                            const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  return causal_conv1d_workspace_bytes();
}

int32_t CausalConv1dPlugin::getAliasedInput(int32_t outputIndex) noexcept {
  return causal_conv1d_aliased_input(outputIndex);
}

int32_t CausalConv1dPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                          const nvinfer1::PluginTensorDesc*, int32_t nbOutputs) noexcept {
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

int32_t CausalConv1dPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                    const void* const* inputs, void* const* outputs, void*,
                                    cudaStream_t stream) noexcept {
  try {
    namespace kn = qwen35_trt::kernels;
    const int64_t tokens = inputDesc[kConvX].dims.d[0];
    const int64_t channels = inputDesc[kConvX].dims.d[1];
    kn::CausalConv1dParams p;
    p.x = static_cast<const __nv_bfloat16*>(inputs[kConvX]);
    p.x_stride = channels;
    p.weight = static_cast<const __nv_bfloat16*>(inputs[kConvWeight]);
    // Output 1 aliases input 2: the pool is written through the output binding.
    p.state_pool = static_cast<__nv_bfloat16*>(outputs[kConvStatePoolOut - kCausalConv1dInputs]);
    p.y = static_cast<__nv_bfloat16*>(outputs[kConvY - kCausalConv1dInputs]);
    p.y_stride = channels;
    p.channels = channels;
    p.width = fields_.width;
    p.seqs.slots = static_cast<const int32_t*>(inputs[kConvSlots]);
    p.seqs.cu_seqlens = static_cast<const int32_t*>(inputs[kConvCuSeqlens]);
    // TensorRT's bool is one byte holding 0 or 1: the kernel's uint8 flags.
    p.seqs.has_initial_state = static_cast<const uint8_t*>(inputs[kConvHasInitialState]);
    p.seqs.batch = inputDesc[kConvSlots].dims.d[0];
    p.seqs.tokens = tokens;
    p.seqs.num_slots = inputDesc[kConvStatePool].dims.d[0];
    p.seqs.max_seqlen = 0;  // unknown on the host without a synchronisation; sizes the grid only
    const std::string e = kn::validate_causal_conv1d(p);
    if (!e.empty()) {
      log("enqueue: " + e);
      return -1;
    }
    const cudaError_t status = kn::causal_conv1d(p, stream);
    if (status != cudaSuccess) {
      log(std::string("enqueue: causal_conv1d launch failed: ") + cudaGetErrorString(status));
      return -1;
    }
    return 0;
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* CausalConv1dPlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();  // no per-context resources
}

const nvinfer1::PluginFieldCollection* CausalConv1dPlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_ = serialize_causal_conv1d_fields(fields_);
    plugin_fields_ = plugin_fields(serialized_);
    collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
    collection_.fields = plugin_fields_.data();
    return &collection_;
  } catch (const std::exception& e) {
    log(std::string("getFieldsToSerialize: ") + e.what());
    return nullptr;
  }
}

CausalConv1dCreator::CausalConv1dCreator()
    : schema_(causal_conv1d_field_schema()), plugin_fields_(plugin_fields(schema_)) {
  collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
  collection_.fields = plugin_fields_.data();
}

nvinfer1::IPluginV3* CausalConv1dCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                       nvinfer1::TensorRTPhase) noexcept {
  try {
    CausalConv1dFields fields;
    const std::string e = parse_causal_conv1d_fields(field_views(fc), &fields);
    if (!e.empty()) {
      log(e);
      return nullptr;
    }
    return new CausalConv1dPlugin(fields);
  } catch (const std::exception& e) {
    log(std::string("createPlugin: ") + e.what());
    return nullptr;
  }
}

}  // namespace qwen35_trt::plugins
