// The Nvfp4Linear TensorRT adapter (see nvfp4_linear_plugin.h): fields, dtypes, shapes and the
// workspace come from nvfp4_linear_rules; enqueue fills kernels::Nvfp4LinearParams as
// python/qwen35_trt/ops/moe_cuda.py does and calls the same launcher.
#include "nvfp4_linear_plugin.h"

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

void log(const std::string& message) { log_error(kNvfp4LinearName, message); }

bool counts_ok(const Nvfp4LinearFields& f, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == nvfp4_linear_inputs(f) && nbOutputs == kNvfp4LinearOutputs) return true;
  log(std::string("expected ") +
      (nvfp4_linear_inputs(f) == 5 ? "5 inputs (x, weight, weight_scale, weight_scale_2, input_scale)"
                                   : "4 inputs (x, weight, weight_scale, weight_scale_2)") +
      " for activation \"" + nvfp4_activation_name(f.activation) + "\" and 1 output, got " +
      std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
  return false;
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) {
  return std::vector<int64_t>(d.d, d.d + (d.nbDims > 0 ? d.nbDims : 0));
}

// The launcher's params for rows x [n, k] with null pointers: enough for the workspace size,
// which depends only on the shapes, the layout and whether input scales are present.
kn::Nvfp4LinearParams shape_params(const Nvfp4LinearFields& f, int64_t rows, int64_t n, int64_t k) {
  kn::Nvfp4LinearParams p;
  p.rows = rows;
  p.n = static_cast<int32_t>(n);
  p.k = static_cast<int32_t>(k);
  p.w.layout = f.scale_layout == Nvfp4ScaleLayout::kRowMajor ? kn::ScaleLayout::kRowMajor
                                                             : kn::ScaleLayout::kSwizzled128x4;
  // moe_cuda.py passes "auto" and the input scale whenever the weight carries one: the launcher
  // then runs the native W4A4 path where it is compiled in and the device is sm_100, else W4A16.
  p.backend = kn::Nvfp4Backend::kAuto;
  return p;
}

}  // namespace

nvinfer1::IPluginCapability* Nvfp4LinearPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* Nvfp4LinearPlugin::clone() noexcept {
  try {
    return new Nvfp4LinearPlugin(*this);
  } catch (const std::exception& e) {
    log(std::string("clone: ") + e.what());
    return nullptr;
  }
}

int32_t Nvfp4LinearPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                              int32_t nbInputs) const noexcept {
  if (!counts_ok(fields_, nbInputs, nbOutputs)) return -1;
  // Refusing here names the tensor; supportsFormatCombination alone would only fail the build.
  for (int32_t i = 0; i < nbInputs; ++i) {
    const ElementType want = nvfp4_linear_dtype(i, fields_);
    if (inputTypes[i] != to_trt(want)) {
      const bool bytes = want == ElementType::kInt8;
      log(std::string(nvfp4_linear_tensor_name(i, fields_)) + ": expected " + element_type_name(want) + ", got " +
          dtype_name(inputTypes[i]) +
          (bytes ? " (int8 carries the raw bytes: TensorRT-RTX takes no uint8 or fp8 plugin tensor here)" : ""));
      return -1;
    }
  }
  outputTypes[0] = to_trt(nvfp4_linear_dtype(nbInputs, fields_));
  return 0;
}

int32_t Nvfp4LinearPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
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
  const std::string e = check_nvfp4_linear_shapes(known, fields_);
  if (!e.empty()) {
    log(e);
    return -1;
  }
  // y [T, N]: T from x, N from the weight.
  outputs[0].nbDims = 2;
  outputs[0].d[0] = inputs[kLinX].d[0];
  outputs[0].d[1] = inputs[kLinWeight].d[0];
  return 0;
}

bool Nvfp4LinearPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                                  int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != nvfp4_linear_inputs(fields_) || nbOutputs != kNvfp4LinearOutputs || pos < 0 ||
      pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
  return d.format == nvinfer1::TensorFormat::kLINEAR && d.type == to_trt(nvfp4_linear_dtype(pos, fields_));
}

bool Nvfp4LinearPlugin::check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const {
  std::vector<std::vector<int64_t>> dims;
  for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(to_vector(*inputs[i]));
  const std::string e = check_nvfp4_linear_shapes(dims, fields_);
  if (!e.empty()) log(e);
  return e.empty();
}

int32_t Nvfp4LinearPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
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

size_t Nvfp4LinearPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                           const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  if (nbInputs != nvfp4_linear_inputs(fields_)) return 0;
  // The profile's largest T: the native path's scratch grows with the rows, so this covers every
  // runtime shape of the profile. The W4A16 kernels need no workspace.
  const nvinfer1::Dims& x = inputs[kLinX].max;
  const nvinfer1::Dims& w = inputs[kLinWeight].max;
  if (x.nbDims != 2 || w.nbDims != 2 || !nvfp4_linear_may_run_native(fields_)) return 0;
  const kn::Nvfp4LinearParams p = shape_params(fields_, x.d[0], w.d[0], x.d[1]);
  return nvfp4_padded_workspace_bytes(kn::nvfp4_linear_workspace_size(p));
}

int32_t Nvfp4LinearPlugin::getAliasedInput(int32_t) noexcept { return -1; }

int32_t Nvfp4LinearPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
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

int32_t Nvfp4LinearPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                   const void* const* inputs, void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
  try {
    const int64_t rows = inputDesc[kLinX].dims.d[0];
    const int64_t k = inputDesc[kLinX].dims.d[1];
    const int64_t n = inputDesc[kLinWeight].dims.d[0];
    kn::Nvfp4LinearParams p = shape_params(fields_, rows, n, k);
    p.x = static_cast<const __nv_bfloat16*>(inputs[kLinX]);
    p.y = static_cast<__nv_bfloat16*>(outputs[0]);
    // One matrix: the per-group strides stay 0 and row_offset 0, as moe_cuda.py passes them.
    p.w.packed = static_cast<const uint8_t*>(inputs[kLinWeight]);
    p.w.scales = static_cast<const uint8_t*>(inputs[kLinWeightScale]);
    p.w.global_scale = static_cast<const float*>(inputs[kLinWeightScale2]);
    if (fields_.activation == Nvfp4Activation::kW4A4) {
      p.w.input_scale = static_cast<const float*>(inputs[kLinInputScale]);
    }
    // As getWorkspaceSize: none unless the native path may run (the launcher's size function
    // answers for that path whatever the call, so it is not asked otherwise).
    const std::size_t ws_bytes = nvfp4_linear_may_run_native(fields_) ? kn::nvfp4_linear_workspace_size(p) : 0;
    void* ws = ws_bytes > 0 ? nvfp4_aligned_workspace(workspace) : nullptr;
    if (ws_bytes > 0 && ws == nullptr) {
      log("enqueue: no workspace (getWorkspaceSize was not honoured)");
      return -1;
    }
    const cudaError_t status = kn::nvfp4_linear(p, ws, ws_bytes, stream);
    if (status != cudaSuccess) {
      log(std::string("enqueue: nvfp4_linear failed: ") +
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

nvinfer1::IPluginV3* Nvfp4LinearPlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();  // no per-context resources
}

const nvinfer1::PluginFieldCollection* Nvfp4LinearPlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_ = serialize_nvfp4_linear_fields(fields_);
    plugin_fields_ = plugin_fields(serialized_);
    collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
    collection_.fields = plugin_fields_.data();
    return &collection_;
  } catch (const std::exception& e) {
    log(std::string("getFieldsToSerialize: ") + e.what());
    return nullptr;
  }
}

Nvfp4LinearCreator::Nvfp4LinearCreator()
    : schema_(nvfp4_linear_field_schema()), plugin_fields_(plugin_fields(schema_)) {
  collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
  collection_.fields = plugin_fields_.data();
}

nvinfer1::IPluginV3* Nvfp4LinearCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                      nvinfer1::TensorRTPhase) noexcept {
  try {
    Nvfp4LinearFields fields;
    const std::string e = parse_nvfp4_linear_fields(field_views(fc), &fields);
    if (!e.empty()) {
      log(e);
      return nullptr;
    }
    return new Nvfp4LinearPlugin(fields);
  } catch (const std::exception& e) {
    log(std::string("createPlugin: ") + e.what());
    return nullptr;
  }
}

}  // namespace qwen35_trt::plugins
