// The GatedAttention TensorRT adapter (see gated_attention_plugin.h): fields, dtypes, shapes and
// aliasing come from gated_attention_rules; the workspace size is the kernel's own
// gated_attention_workspace_bytes (the rules library has no CUDA), padded for alignment
// (workspace_rules.h); enqueue calls the same launcher as the Python binding.
#include "gated_attention_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "qwen35_trt/kernels/attention.h"
#include "workspace_rules.h"

namespace qwen35_trt::plugins {

namespace kn = qwen35_trt::kernels;
using nvinfer1::DataType;

std::string GatedAttentionOp::counts_error(const Fields&, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == kGatedAttentionInputs && nbOutputs == kGatedAttentionOutputs) return "";
  return "expected 9 inputs (qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, cu_seqlens, "
         "context_lens) and 2 outputs, got " +
         std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
}

bool GatedAttentionOp::type_ok(int32_t pos, DataType type, const Fields&) {
  return type == to_trt(gated_attention_dtype(pos));
}

std::string GatedAttentionOp::type_error(int32_t pos, DataType got, const Fields&) {
  return type_error_message(gated_attention_tensor_name(pos), element_type_name(gated_attention_dtype(pos)), got);
}

DataType GatedAttentionOp::output_type(int32_t output, int32_t, const Fields&) {
  return to_trt(gated_attention_dtype(kGatedAttentionInputs + output));
}

void GatedAttentionOp::output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t,
                                     const Fields& fields, nvinfer1::IExprBuilder& exprs) {
  // out [T, nh * hd]: T from qg, the width from the fields; the pool output is the pool.
  outputs[0].nbDims = 2;
  outputs[0].d[0] = inputs[kAttnQg].d[0];
  outputs[0].d[1] = exprs.constant(gated_attention_out_width(fields));
  outputs[1] = inputs[kAttnKvPool];
}

size_t GatedAttentionPlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                              const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  if (nbInputs != kGatedAttentionInputs) return 0;
  // The normalised queries of the profile's largest T: the need grows with T only.
  const nvinfer1::Dims& qg = inputs[kAttnQg].max;
  if (qg.nbDims != 2) return 0;
  return padded_workspace_bytes(kn::gated_attention_workspace_bytes(qg.d[0], fields_.num_heads, fields_.head_dim));
}

int32_t GatedAttentionPlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                      const void* const* inputs, void* const* outputs, void* workspace,
                                      cudaStream_t stream) noexcept {
  try {
    const nvinfer1::Dims& qg = inputDesc[kAttnQg].dims;
    const nvinfer1::Dims& pool = inputDesc[kAttnKvPool].dims;
    const nvinfer1::Dims& tables = inputDesc[kAttnBlockTables].dims;
    kn::GatedAttentionParams p;
    // Every tensor TensorRT binds is dense: the token stride is the row width.
    p.qg = static_cast<const __nv_bfloat16*>(inputs[kAttnQg]);
    p.qg_stride = qg.d[1];
    p.k = static_cast<const __nv_bfloat16*>(inputs[kAttnK]);
    p.k_stride = inputDesc[kAttnK].dims.d[1];
    p.v = static_cast<const __nv_bfloat16*>(inputs[kAttnV]);
    p.v_stride = inputDesc[kAttnV].dims.d[1];
    p.q_norm_weight = static_cast<const __nv_bfloat16*>(inputs[kAttnQNormWeight]);
    p.k_norm_weight = static_cast<const __nv_bfloat16*>(inputs[kAttnKNormWeight]);
    // Output 1 aliases input 5: the pool is written through the output binding.
    p.kv_pool = static_cast<__nv_bfloat16*>(outputs[kAttnKvPoolOut - kGatedAttentionInputs]);
    p.num_blocks = pool.d[0];
    p.block_size = static_cast<int>(pool.d[3]);
    p.block_tables = static_cast<const int32_t*>(inputs[kAttnBlockTables]);
    p.max_blocks_per_seq = tables.d[1];
    p.cu_seqlens = static_cast<const int32_t*>(inputs[kAttnCuSeqlens]);
    p.context_lens = static_cast<const int32_t*>(inputs[kAttnContextLens]);
    p.batch = tables.d[0];
    p.tokens = qg.d[0];
    p.out = static_cast<__nv_bfloat16*>(outputs[kAttnOut - kGatedAttentionInputs]);
    p.out_stride = gated_attention_out_width(fields_);
    p.num_heads = fields_.num_heads;
    p.num_kv_heads = fields_.num_kv_heads;
    p.head_dim = fields_.head_dim;
    p.rotary_dim = fields_.rotary_dim;
    p.rope_theta = fields_.rope_theta;
    p.eps = fields_.eps;
    p.scale = fields_.scale;
    const std::size_t ws_bytes = kn::gated_attention_workspace_bytes(p.tokens, p.num_heads, p.head_dim);
    void* ws = aligned_workspace(workspace);
    const std::string e = ws == nullptr && ws_bytes > 0 ? std::string("no workspace (getWorkspaceSize was not honoured)")
                                                        : kn::validate_gated_attention(p, ws_bytes);
    return launch("gated_attention", e, [&] { return kn::gated_attention(p, ws, ws_bytes, stream); });
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

}  // namespace qwen35_trt::plugins
