// The Nvfp4MoE TensorRT adapter (see nvfp4_moe_plugin.h): fields, dtypes, shapes and the workspace
// come from nvfp4_moe_rules; enqueue fills kernels::Nvfp4MoeParams as
// python/qwen35_trt/ops/moe_cuda.py does and calls the same launcher.
#include "nvfp4_moe_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "plugin_fields.h"
#include "plugin_logging.h"
#include "qwen35_trt/kernels/moe.h"

namespace qwen35_trt::plugins {
namespace {

using nvinfer1::DataType;
namespace kn = qwen35_trt::kernels;

void log(const std::string& message) { log_error(kNvfp4MoeName, message); }

bool counts_ok(const Nvfp4MoeFields& f, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == nvfp4_moe_inputs(f) && nbOutputs == kNvfp4MoeOutputs) return true;
  log("expected " + std::to_string(nvfp4_moe_inputs(f)) + " inputs for activation \"" +
      nvfp4_activation_name(f.activation) + "\" and 1 output, got " + std::to_string(nbInputs) + " and " +
      std::to_string(nbOutputs));
  return false;
}

// The rules' dtype, or bf16 where the rules accept it too (router_logits).
bool type_ok(int32_t pos, DataType type, const Nvfp4MoeFields& f) {
  if (type == DataType::kBF16) return nvfp4_moe_accepts(pos, ElementType::kBF16, f);
  return type == to_trt(nvfp4_moe_dtype(pos, f));
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) {
  return std::vector<int64_t>(d.d, d.d + (d.nbDims > 0 ? d.nbDims : 0));
}

kn::ScaleLayout kernel_layout(Nvfp4ScaleLayout l) {
  return l == Nvfp4ScaleLayout::kRowMajor ? kn::ScaleLayout::kRowMajor : kn::ScaleLayout::kSwizzled128x4;
}

// The launcher's params for the sizes, with the per-expert strides of moe_cuda.py `_operand`
// (0 for a single expert, as it passes them) and null pointers: enough for the workspace size,
// which depends only on these.
kn::Nvfp4MoeParams shape_params(const Nvfp4MoeFields& f, int64_t tokens, int64_t H, int64_t I, int64_t E) {
  kn::Nvfp4MoeParams p;
  p.tokens = static_cast<int32_t>(tokens);
  p.hidden_size = static_cast<int32_t>(H);
  p.intermediate = static_cast<int32_t>(I);
  p.num_experts = static_cast<int32_t>(E);
  p.top_k = f.top_k;
  const kn::ScaleLayout layout = kernel_layout(f.scale_layout);
  const bool grouped = E > 1;
  for (kn::Nvfp4DeviceWeights* w : {&p.gate, &p.up}) {
    w->packed_stride = grouped ? 2 * I * H / 2 : 0;
    w->scale_stride = grouped ? static_cast<int64_t>(moe::scale_bytes(layout, 2 * I, H)) : 0;
    w->global_stride = grouped ? 2 : 0;  // into the [E, 2] (gate, up) globals
    w->input_stride = grouped ? 1 : 0;
    w->layout = layout;
  }
  p.up.row_offset = static_cast<int32_t>(I);  // up rows [I, 2I) of the fused matrix
  p.down.packed_stride = grouped ? H * I / 2 : 0;
  p.down.scale_stride = grouped ? static_cast<int64_t>(moe::scale_bytes(layout, H, I)) : 0;
  p.down.global_stride = grouped ? 1 : 0;
  p.down.input_stride = grouped ? 1 : 0;
  p.down.layout = layout;
  // moe_cuda.py passes "auto": native W4A4 where it is compiled in, the device is sm_100 and the
  // input scales are given (activation "w4a4"), else the W4A16 kernels.
  p.backend = kn::Nvfp4Backend::kAuto;
  return p;
}

}  // namespace

nvinfer1::IPluginCapability* Nvfp4MoePlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* Nvfp4MoePlugin::clone() noexcept {
  try {
    return new Nvfp4MoePlugin(*this);
  } catch (const std::exception& e) {
    log(std::string("clone: ") + e.what());
    return nullptr;
  }
}

int32_t Nvfp4MoePlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                           int32_t nbInputs) const noexcept {
  if (!counts_ok(fields_, nbInputs, nbOutputs)) return -1;
  // Refusing here names the tensor; supportsFormatCombination alone would only fail the build.
  for (int32_t i = 0; i < nbInputs; ++i) {
    if (!type_ok(i, inputTypes[i], fields_)) {
      const ElementType want = nvfp4_moe_dtype(i, fields_);
      log(std::string(nvfp4_moe_tensor_name(i, fields_)) + ": expected " +
          (i == kMoeRouterLogits ? "fp32 or bf16" : element_type_name(want)) + ", got " + dtype_name(inputTypes[i]) +
          (want == ElementType::kInt8
               ? " (int8 carries the raw bytes: TensorRT-RTX takes no uint8 or fp8 plugin tensor here)"
               : ""));
      return -1;
    }
  }
  outputTypes[0] = to_trt(nvfp4_moe_dtype(nbInputs, fields_));
  return 0;
}

int32_t Nvfp4MoePlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
                                        const nvinfer1::DimsExprs*, int32_t, nvinfer1::DimsExprs* outputs,
                                        int32_t nbOutputs, nvinfer1::IExprBuilder&) noexcept {
  if (!counts_ok(fields_, nbInputs, nbOutputs)) return -1;
  // The dims known at this point (constants) are checked now, the rest in configurePlugin.
  std::vector<std::vector<int64_t>> known(nbInputs);
  for (int32_t i = 0; i < nbInputs; ++i) {
    for (int32_t k = 0; k < inputs[i].nbDims; ++k) {
      const nvinfer1::IDimensionExpr* e = inputs[i].d[k];
      known[i].push_back(e != nullptr && e->isConstant() ? e->getConstantValue() : -1);
    }
  }
  const std::string e = check_nvfp4_moe_shapes(known, fields_);
  if (!e.empty()) {
    log(e);
    return -1;
  }
  outputs[0] = inputs[kMoeHidden];  // out [T, H]
  return 0;
}

bool Nvfp4MoePlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                               int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != nvfp4_moe_inputs(fields_) || nbOutputs != kNvfp4MoeOutputs || pos < 0 ||
      pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
  return d.format == nvinfer1::TensorFormat::kLINEAR && type_ok(pos, d.type, fields_);
}

bool Nvfp4MoePlugin::check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const {
  std::vector<std::vector<int64_t>> dims;
  for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(to_vector(*inputs[i]));
  const std::string e = check_nvfp4_moe_shapes(dims, fields_);
  if (!e.empty()) log(e);
  return e.empty();
}

int32_t Nvfp4MoePlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                        const nvinfer1::DynamicPluginTensorDesc*, int32_t nbOutputs) noexcept {
  try {
    if (!counts_ok(fields_, nbInputs, nbOutputs)) return -1;
    std::vector<const nvinfer1::Dims*> dims;
    for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(&in[i].desc.dims);  // -1 where dynamic
    return check_shapes(dims.data(), nbInputs) ? 0 : -1;
  } catch (const std::exception& e) {
    log(std::string("configurePlugin: ") + e.what());
    return -1;
  }
}

size_t Nvfp4MoePlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                        const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  if (nbInputs != nvfp4_moe_inputs(fields_)) return 0;
  // The profile's largest T: every buffer of the launcher grows with the tokens, so this covers
  // every runtime shape of the profile.
  const nvinfer1::Dims& x = inputs[kMoeHidden].max;
  const nvinfer1::Dims& gu = inputs[kMoeGateUpWeight].max;
  if (x.nbDims != 2 || gu.nbDims != 3) return 0;
  const kn::Nvfp4MoeParams p = shape_params(fields_, x.d[0], x.d[1], gu.d[1] / 2, gu.d[0]);
  return nvfp4_padded_workspace_bytes(kn::nvfp4_moe_workspace_size(p));
}

int32_t Nvfp4MoePlugin::getAliasedInput(int32_t) noexcept { return -1; }

int32_t Nvfp4MoePlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                      const nvinfer1::PluginTensorDesc*, int32_t nbOutputs) noexcept {
  try {
    if (!counts_ok(fields_, nbInputs, nbOutputs)) return -1;
    std::vector<const nvinfer1::Dims*> dims;
    for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(&in[i].dims);
    return check_shapes(dims.data(), nbInputs) ? 0 : -1;
  } catch (const std::exception& e) {
    log(std::string("onShapeChange: ") + e.what());
    return -1;
  }
}

int32_t Nvfp4MoePlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                const void* const* inputs, void* const* outputs, void* workspace,
                                cudaStream_t stream) noexcept {
  try {
    const nvinfer1::Dims& x = inputDesc[kMoeHidden].dims;
    const nvinfer1::Dims& gu = inputDesc[kMoeGateUpWeight].dims;
    kn::Nvfp4MoeParams p = shape_params(fields_, x.d[0], x.d[1], gu.d[1] / 2, gu.d[0]);
    if (p.tokens == 0) return 0;  // nothing to do (and a profile may allow T = 0)
    p.hidden = static_cast<const __nv_bfloat16*>(inputs[kMoeHidden]);
    p.router_logits = inputs[kMoeRouterLogits];
    p.router_logits_bf16 = inputDesc[kMoeRouterLogits].type == DataType::kBF16;
    p.out = static_cast<__nv_bfloat16*>(outputs[0]);
    const auto* s2 = static_cast<const float*>(inputs[kMoeGateUpScale2]);
    for (kn::Nvfp4DeviceWeights* w : {&p.gate, &p.up}) {
      w->packed = static_cast<const uint8_t*>(inputs[kMoeGateUpWeight]);
      w->scales = static_cast<const uint8_t*>(inputs[kMoeGateUpScale]);
    }
    p.gate.global_scale = s2;
    p.up.global_scale = s2 + 1;  // the up global of expert e is [e, 1]
    p.down.packed = static_cast<const uint8_t*>(inputs[kMoeDownWeight]);
    p.down.scales = static_cast<const uint8_t*>(inputs[kMoeDownScale]);
    p.down.global_scale = static_cast<const float*>(inputs[kMoeDownScale2]);
    if (fields_.activation == Nvfp4Activation::kW4A4) {
      p.gate.input_scale = p.up.input_scale = static_cast<const float*>(inputs[kMoeGateUpInputScale]);
      p.down.input_scale = static_cast<const float*>(inputs[kMoeDownInputScale]);
    }
    const std::size_t ws_bytes = kn::nvfp4_moe_workspace_size(p);
    void* ws = nvfp4_aligned_workspace(workspace);
    if (ws == nullptr) {
      log("enqueue: no workspace (getWorkspaceSize was not honoured)");
      return -1;
    }
    const cudaError_t status = kn::nvfp4_moe(p, ws, ws_bytes, stream);
    if (status != cudaSuccess) {
      log(std::string("enqueue: nvfp4_moe failed: ") +
          (status == cudaErrorInvalidValue ? "invalid arguments (shapes, strides or alignment)"
                                           : cudaGetErrorString(status)));
      return -1;
    }
    return 0;
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* Nvfp4MoePlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();  // no per-context resources
}

const nvinfer1::PluginFieldCollection* Nvfp4MoePlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_ = serialize_nvfp4_moe_fields(fields_);
    plugin_fields_ = plugin_fields(serialized_);
    collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
    collection_.fields = plugin_fields_.data();
    return &collection_;
  } catch (const std::exception& e) {
    log(std::string("getFieldsToSerialize: ") + e.what());
    return nullptr;
  }
}

Nvfp4MoeCreator::Nvfp4MoeCreator() : schema_(nvfp4_moe_field_schema()), plugin_fields_(plugin_fields(schema_)) {
  collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
  collection_.fields = plugin_fields_.data();
}

nvinfer1::IPluginV3* Nvfp4MoeCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                   nvinfer1::TensorRTPhase) noexcept {
  try {
    Nvfp4MoeFields fields;
    const std::string e = parse_nvfp4_moe_fields(field_views(fc), &fields);
    if (!e.empty()) {
      log(e);
      return nullptr;
    }
    return new Nvfp4MoePlugin(fields);
  } catch (const std::exception& e) {
    log(std::string("createPlugin: ") + e.what());
    return nullptr;
  }
}

}  // namespace qwen35_trt::plugins
