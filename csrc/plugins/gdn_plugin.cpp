// The GatedDeltaNet TensorRT adapter (see gdn_plugin.h): fields, dtypes, shapes, aliasing,
// workspace and the kernel choice come from gdn_rules; enqueue calls the same launchers as the
// Python binding (gdn_chunk_prefill, gdn_recurrent).
#include "gdn_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "qwen35_trt/kernels/gdn.h"

namespace qwen35_trt::plugins {

using nvinfer1::DataType;

std::string GatedDeltaNetOp::counts_error(const Fields&, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == kGatedDeltaNetInputs && nbOutputs == kGatedDeltaNetOutputs) return "";
  return "expected 11 inputs (q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, has_initial_state) and "
         "2 outputs, got " +
         std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
}

bool GatedDeltaNetOp::type_ok(int32_t pos, DataType type, const Fields&) { return type == to_trt(gated_delta_net_dtype(pos)); }

std::string GatedDeltaNetOp::type_error(int32_t pos, DataType got, const Fields&) {
  return type_error_message(gated_delta_net_tensor_name(pos), element_type_name(gated_delta_net_dtype(pos)), got);
}

DataType GatedDeltaNetOp::output_type(int32_t output, int32_t, const Fields&) {
  return to_trt(gated_delta_net_dtype(kGatedDeltaNetInputs + output));
}

void GatedDeltaNetOp::output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                    const Fields&, nvinfer1::IExprBuilder&) {
  for (int32_t o = 0; o < nbOutputs; ++o) outputs[o] = inputs[gated_delta_net_output_shape_source(o)];
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
      slots.d[0], q.d[0], static_cast<int>(v.d[1]), static_cast<int>(q.d[2]), static_cast<int>(v.d[2]));
  return gated_delta_net_workspace_bytes(gated_delta_net_may_run_chunked(fields_, dk), chunked);
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
      const std::size_t ws_bytes =
          kn::gdn_chunk_prefill_workspace_bytes(batch, tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim);
      e = workspace == nullptr ? std::string("no workspace (getWorkspaceSize was not honoured)")
                               : kn::validate_gdn_chunk_prefill(p, ws_bytes);
      return launch("gdn_chunk_prefill", e, [&] { return kn::gdn_chunk_prefill(p, ws, ws_bytes, stream); });
    }
    return launch("gdn_recurrent", kn::validate_gdn_recurrent(p), [&] { return kn::gdn_recurrent(p, stream); });
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

}  // namespace qwen35_trt::plugins
