// The GatedDeltaNet TensorRT adapter (see gdn_plugin.h): fields, dtypes, shapes, aliasing,
// workspace and the kernel choice come from gdn_rules; enqueue calls the same launchers as the
// Python binding (gdn_chunk_prefill, gdn_recurrent).
#include "gdn_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "plugin_fields.h"
#include "plugin_logging.h"
#include "qwen35_trt/kernels/gdn.h"

namespace qwen35_trt::plugins {
namespace {

using nvinfer1::DataType;

void log(const std::string& message) { log_error(kGatedDeltaNetName, message); }

bool counts_ok(int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == kGatedDeltaNetInputs && nbOutputs == kGatedDeltaNetOutputs) return true;
  log("expected 11 inputs (q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, has_initial_state) and "
      "2 outputs, got " +
      std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
  return false;
}

std::vector<int64_t> to_vector(const nvinfer1::Dims& d) {
  return std::vector<int64_t>(d.d, d.d + (d.nbDims > 0 ? d.nbDims : 0));
}

}  // namespace

nvinfer1::IPluginCapability* GatedDeltaNetPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuildV2*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* GatedDeltaNetPlugin::clone() noexcept {
  try {
    return new GatedDeltaNetPlugin(*this);
  } catch (const std::exception& e) {
    log(std::string("clone: ") + e.what());
    return nullptr;
  }
}

int32_t GatedDeltaNetPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                               int32_t nbInputs) const noexcept {
  if (!counts_ok(nbInputs, nbOutputs)) return -1;
  // Refusing here names the tensor; supportsFormatCombination alone would only fail the build.
  for (int32_t i = 0; i < nbInputs; ++i) {
    if (inputTypes[i] != to_trt(gated_delta_net_dtype(i))) {
      log(std::string(gated_delta_net_tensor_name(i)) + ": expected " + element_type_name(gated_delta_net_dtype(i)) +
          ", got " + dtype_name(inputTypes[i]));
      return -1;
    }
  }
  for (int32_t o = 0; o < nbOutputs; ++o) outputTypes[o] = to_trt(gated_delta_net_dtype(kGatedDeltaNetInputs + o));
  return 0;
}

int32_t GatedDeltaNetPlugin::getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs,
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
  const std::string e = check_gated_delta_net_shapes(known, fields_);
  if (!e.empty()) {
    log(e);
    return -1;
  }
  for (int32_t o = 0; o < nbOutputs; ++o) outputs[o] = inputs[gated_delta_net_output_shape_source(o)];
  return 0;
}

bool GatedDeltaNetPlugin::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != kGatedDeltaNetInputs || nbOutputs != kGatedDeltaNetOutputs || pos < 0 ||
      pos >= nbInputs + nbOutputs) {
    return false;
  }
  const nvinfer1::PluginTensorDesc& d = inOut[pos].desc;
  return d.format == nvinfer1::TensorFormat::kLINEAR && d.type == to_trt(gated_delta_net_dtype(pos));
}

bool GatedDeltaNetPlugin::check_shapes(const nvinfer1::Dims* const* inputs, int32_t nbInputs) const {
  std::vector<std::vector<int64_t>> dims;
  for (int32_t i = 0; i < nbInputs; ++i) dims.push_back(to_vector(*inputs[i]));
  const std::string e = check_gated_delta_net_shapes(dims, fields_);
  if (!e.empty()) log(e);
  return e.empty();
}

int32_t GatedDeltaNetPlugin::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
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

size_t GatedDeltaNetPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                              const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  if (nbInputs != kGatedDeltaNetInputs) return 0;
  // The profile's largest shapes: the chunked prefill's need grows with B and T, so this covers
  // every runtime shape of the profile.
  const nvinfer1::Dims& q = inputs[kGdnQ].max;
  const nvinfer1::Dims& v = inputs[kGdnV].max;
  const nvinfer1::Dims& slots = inputs[kGdnSlots].max;
  if (q.nbDims != 3 || v.nbDims != 3 || slots.nbDims != 1) return 0;
  const int64_t dk = inputs[kGdnQ].desc.dims.d[2];  // -1 unless constant (it always is in the model)
  const std::size_t chunked = qwen35_trt::kernels::gdn_chunk_prefill_workspace_bytes(
      slots.d[0], q.d[0], static_cast<int>(v.d[1]));
  return gated_delta_net_workspace_bytes(gated_delta_net_may_run_chunked(fields_, dk), chunked);
}

int32_t GatedDeltaNetPlugin::getAliasedInput(int32_t outputIndex) noexcept {
  return gated_delta_net_aliased_input(outputIndex);
}

int32_t GatedDeltaNetPlugin::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
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

int32_t GatedDeltaNetPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                     const void* const* inputs, void* const* outputs, void* workspace,
                                     cudaStream_t stream) noexcept {
  try {
    namespace kn = qwen35_trt::kernels;
    const nvinfer1::Dims& q = inputDesc[kGdnQ].dims;
    const nvinfer1::Dims& v = inputDesc[kGdnV].dims;
    const int64_t tokens = q.d[0];
    const int64_t batch = inputDesc[kGdnSlots].dims.d[0];
    kn::GatedDeltaNetParams p;
    // Every tensor TensorRT binds is dense: the token stride is the row size.
    p.q = static_cast<const __nv_bfloat16*>(inputs[kGdnQ]);
    p.q_stride = q.d[1] * q.d[2];
    p.k = static_cast<const __nv_bfloat16*>(inputs[kGdnK]);
    p.k_stride = q.d[1] * q.d[2];
    p.v = static_cast<const __nv_bfloat16*>(inputs[kGdnV]);
    p.v_stride = v.d[1] * v.d[2];
    p.a = static_cast<const __nv_bfloat16*>(inputs[kGdnA]);
    p.a_stride = v.d[1];
    p.b = static_cast<const __nv_bfloat16*>(inputs[kGdnB]);
    p.b_stride = v.d[1];
    p.A_log = static_cast<const float*>(inputs[kGdnALog]);
    p.dt_bias = static_cast<const float*>(inputs[kGdnDtBias]);
    // Output 1 aliases input 7: the pool is written through the output binding.
    p.state_pool = static_cast<float*>(outputs[kGdnStatePoolOut - kGatedDeltaNetInputs]);
    p.o = static_cast<__nv_bfloat16*>(outputs[kGdnO - kGatedDeltaNetInputs]);
    p.o_stride = v.d[1] * v.d[2];
    p.num_k_heads = static_cast<int>(q.d[1]);
    p.num_v_heads = static_cast<int>(v.d[1]);
    p.head_k_dim = static_cast<int>(q.d[2]);
    p.head_v_dim = static_cast<int>(v.d[2]);
    p.scale = gated_delta_net_scale(fields_, q.d[2]);
    p.use_qk_l2norm = fields_.use_qk_l2norm != 0;
    // Both kernels take the prefill form (the recurrent one for any cu_seqlens), so a
    // one-token-per-sequence call keeps has_initial_state's meaning whichever kernel runs it.
    p.seqs.slots = static_cast<const int32_t*>(inputs[kGdnSlots]);
    p.seqs.cu_seqlens = static_cast<const int32_t*>(inputs[kGdnCuSeqlens]);
    // TensorRT's bool is one byte holding 0 or 1: the kernels' uint8 flags.
    p.seqs.has_initial_state = static_cast<const uint8_t*>(inputs[kGdnHasInitialState]);
    p.seqs.batch = batch;
    p.seqs.tokens = tokens;
    p.seqs.num_slots = inputDesc[kGdnStatePool].dims.d[0];
    p.seqs.max_seqlen = tokens == batch ? 1 : 0;  // 0: unknown without a synchronisation; sizes the grid only

    // The device limit only matters when the chunked prefill is allowed at all.
    std::size_t need_shared = 0;
    int optin = 0;
    if (fields_.algorithm != GdnAlgorithm::kRecurrent) {
      need_shared = kn::gdn_chunk_prefill_shared_bytes(p.head_k_dim);
      int device = 0;
      cudaError_t status = cudaGetDevice(&device);
      if (status == cudaSuccess) status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
      if (status != cudaSuccess) {
        log(std::string("enqueue: cannot read the device's shared memory limit: ") + cudaGetErrorString(status));
        return -1;
      }
    }
    GdnForm form = GdnForm::kRecurrent;
    std::string e = choose_gated_delta_net_form(fields_, tokens, batch, p.head_k_dim, need_shared, optin, &form);
    if (!e.empty()) {
      log("enqueue: " + e);
      return -1;
    }
    if (form == GdnForm::kChunked) {
      void* ws = gated_delta_net_aligned_workspace(workspace);
      const std::size_t ws_bytes = kn::gdn_chunk_prefill_workspace_bytes(batch, tokens, p.num_v_heads);
      e = workspace == nullptr ? std::string("no workspace (getWorkspaceSize was not honoured)")
                               : kn::validate_gdn_chunk_prefill(p, ws_bytes);
      if (!e.empty()) {
        log("enqueue: " + e);
        return -1;
      }
      const cudaError_t status = kn::gdn_chunk_prefill(p, ws, ws_bytes, stream);
      if (status != cudaSuccess) {
        log(std::string("enqueue: gdn_chunk_prefill launch failed: ") + cudaGetErrorString(status));
        return -1;
      }
      return 0;
    }
    e = kn::validate_gdn_recurrent(p);
    if (!e.empty()) {
      log("enqueue: " + e);
      return -1;
    }
    const cudaError_t status = kn::gdn_recurrent(p, stream);
    if (status != cudaSuccess) {
      log(std::string("enqueue: gdn_recurrent launch failed: ") + cudaGetErrorString(status));
      return -1;
    }
    return 0;
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* GatedDeltaNetPlugin::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();  // no per-context resources
}

const nvinfer1::PluginFieldCollection* GatedDeltaNetPlugin::getFieldsToSerialize() noexcept {
  try {
    serialized_ = serialize_gated_delta_net_fields(fields_);
    plugin_fields_ = plugin_fields(serialized_);
    collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
    collection_.fields = plugin_fields_.data();
    return &collection_;
  } catch (const std::exception& e) {
    log(std::string("getFieldsToSerialize: ") + e.what());
    return nullptr;
  }
}

GatedDeltaNetCreator::GatedDeltaNetCreator()
    : schema_(gated_delta_net_field_schema()), plugin_fields_(plugin_fields(schema_)) {
  collection_.nbFields = static_cast<int32_t>(plugin_fields_.size());
  collection_.fields = plugin_fields_.data();
}

nvinfer1::IPluginV3* GatedDeltaNetCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                       nvinfer1::TensorRTPhase) noexcept {
  try {
    GatedDeltaNetFields fields;
    const std::string e = parse_gated_delta_net_fields(field_views(fc), &fields);
    if (!e.empty()) {
      log(e);
      return nullptr;
    }
    return new GatedDeltaNetPlugin(fields);
  } catch (const std::exception& e) {
    log(std::string("createPlugin: ") + e.what());
    return nullptr;
  }
}

}  // namespace qwen35_trt::plugins
