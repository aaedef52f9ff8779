// The CausalConv1d TensorRT adapter (see causal_conv1d_plugin.h): fields, dtypes, shapes and
// aliasing come from causal_conv1d_rules; enqueue calls the same launcher as the Python binding.
#include "causal_conv1d_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "qwen35_trt/kernels/gdn.h"

namespace qwen35_trt::plugins {

using nvinfer1::DataType;

std::string CausalConv1dOp::counts_error(const Fields&, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == kCausalConv1dInputs && nbOutputs == kCausalConv1dOutputs) return "";
  return "expected 6 inputs (x, weight, conv_state_pool, slots, cu_seqlens, has_initial_state) and 2 outputs, got " +
         std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
}

bool CausalConv1dOp::type_ok(int32_t pos, DataType type, const Fields&) { return type == to_trt(causal_conv1d_dtype(pos)); }

std::string CausalConv1dOp::type_error(int32_t pos, DataType got, const Fields&) {
  return type_error_message(causal_conv1d_tensor_name(pos), element_type_name(causal_conv1d_dtype(pos)), got);
}

DataType CausalConv1dOp::output_type(int32_t output, int32_t, const Fields&) {
  return to_trt(causal_conv1d_dtype(kCausalConv1dInputs + output));
}

void CausalConv1dOp::output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                                   const Fields&, nvinfer1::IExprBuilder&) {
  for (int32_t o = 0; o < nbOutputs; ++o) outputs[o] = inputs[causal_conv1d_output_shape_source(o)];
}

size_t CausalConv1dPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc*, int32_t,
                                            const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  return causal_conv1d_workspace_bytes();
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
    return launch("causal_conv1d", e, [&] { return kn::causal_conv1d(p, stream); });
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

}  // namespace qwen35_trt::plugins
