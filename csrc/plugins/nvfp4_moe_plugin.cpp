// The Nvfp4MoE TensorRT adapter (see nvfp4_moe_plugin.h): fields, dtypes, shapes and the workspace
// come from nvfp4_moe_rules; enqueue fills kernels::Nvfp4MoeParams as
// python/qwen35_trt/ops/moe_cuda.py does and calls the same launcher.
#include "nvfp4_moe_plugin.h"

#include <exception>
#include <string>
#include <utility>

#include "plugin_dtypes.h"
#include "qwen35_trt/kernels/moe.h"

namespace qwen35_trt::plugins {
namespace {

using nvinfer1::DataType;
namespace kn = qwen35_trt::kernels;

kn::ScaleLayout kernel_layout(Nvfp4ScaleLayout l) {
  switch (l) {
    case Nvfp4ScaleLayout::kSwizzled128x4: return kn::ScaleLayout::kSwizzled128x4;
    case Nvfp4ScaleLayout::kW4A16Fragments: return kn::ScaleLayout::kW4A16Fragments;
    case Nvfp4ScaleLayout::kRowMajor: break;
  }
  return kn::ScaleLayout::kRowMajor;
}

// The launcher's params for the sizes, with the per-expert strides of moe_cuda.py `_operand`
// (0 for a single expert, as it passes them) and null pointers: enough for the workspace size,
// which depends only on these. Is = 0: no shared expert.
kn::Nvfp4MoeParams shape_params(const Nvfp4MoeFields& f, int64_t tokens, int64_t H, int64_t I, int64_t E,
                                int64_t Is) {
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
  // The shared expert: one matrix per linear, so every stride is 0 (as moe_cuda.py passes them).
  p.shared_intermediate = static_cast<int32_t>(Is);
  for (kn::Nvfp4DeviceWeights* w : {&p.shared_gate, &p.shared_up, &p.shared_down}) w->layout = layout;
  // moe_cuda.py passes "auto": native W4A4 where it is compiled in, the device is sm_100 and the
  // input scales are given (activation "w4a4"), else the W4A16 kernels.
  p.backend = kn::Nvfp4Backend::kAuto;
  return p;
}

}  // namespace

std::string Nvfp4MoeOp::counts_error(const Fields& f, int32_t nbInputs, int32_t nbOutputs) {
  return nvfp4_moe_counts_error(f, nbInputs, nbOutputs);
}

// The rules' dtype, or bf16 where the rules accept it too (router_logits).
bool Nvfp4MoeOp::type_ok(int32_t pos, DataType type, const Fields& f) {
  if (type == DataType::kBF16) return nvfp4_moe_accepts(pos, ElementType::kBF16, f);
  return type == to_trt(nvfp4_moe_dtype(pos, f));
}

std::string Nvfp4MoeOp::type_error(int32_t pos, DataType got, const Fields& f) {
  const ElementType want = nvfp4_moe_dtype(pos, f);
  return type_error_message(nvfp4_moe_tensor_name(pos, f), pos == kMoeRouterLogits ? "fp32 or bf16" : element_type_name(want),
                            got, want == ElementType::kInt8);
}

DataType Nvfp4MoeOp::output_type(int32_t output, int32_t nbInputs, const Fields& f) {
  return to_trt(nvfp4_moe_dtype(nbInputs + output, f));
}

void Nvfp4MoeOp::output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t,
                               const Fields&, nvinfer1::IExprBuilder&) {
  outputs[0] = inputs[kMoeHidden];  // out [T, H]
}

size_t Nvfp4MoePlugin::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                        const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  if (nbInputs != nvfp4_moe_inputs(fields_)) return 0;
  // The profile's largest T: every buffer of the launcher grows with the tokens, so this covers
  // every runtime shape of the profile.
  const nvinfer1::Dims& x = inputs[kMoeHidden].max;
  const nvinfer1::Dims& gu = inputs[kMoeGateUpWeight].max;
  if (x.nbDims != 2 || gu.nbDims != 3) return 0;
  // The shared expert's buffers grow with Is (shared_gate_weight's rows) too.
  const int32_t sg = nvfp4_moe_shared_pos(fields_, MoeSharedLinear::kGate, MoeSharedPart::kWeight);
  if (sg >= 0 && inputs[sg].max.nbDims != 2) return 0;
  const int64_t Is = sg < 0 ? 0 : inputs[sg].max.d[0];
  const kn::Nvfp4MoeParams p = shape_params(fields_, x.d[0], x.d[1], gu.d[1] / 2, gu.d[0], Is);
  return nvfp4_padded_workspace_bytes(kn::nvfp4_moe_workspace_size(p));
}

int32_t Nvfp4MoePlugin::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc*,
                                const void* const* inputs, void* const* outputs, void* workspace,
                                cudaStream_t stream) noexcept {
  try {
    const nvinfer1::Dims& x = inputDesc[kMoeHidden].dims;
    const nvinfer1::Dims& gu = inputDesc[kMoeGateUpWeight].dims;
    const int32_t sg = nvfp4_moe_shared_pos(fields_, MoeSharedLinear::kGate, MoeSharedPart::kWeight);
    const int64_t Is = sg < 0 ? 0 : inputDesc[sg].dims.d[0];
    kn::Nvfp4MoeParams p = shape_params(fields_, x.d[0], x.d[1], gu.d[1] / 2, gu.d[0], Is);
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
    if (fields_.shared_expert) {
      const std::pair<MoeSharedLinear, kn::Nvfp4DeviceWeights*> shared[] = {
          {MoeSharedLinear::kGate, &p.shared_gate}, {MoeSharedLinear::kUp, &p.shared_up},
          {MoeSharedLinear::kDown, &p.shared_down}};
      for (const auto& [linear, w] : shared) {
        const auto at = [&](MoeSharedPart part) { return inputs[nvfp4_moe_shared_pos(fields_, linear, part)]; };
        w->packed = static_cast<const uint8_t*>(at(MoeSharedPart::kWeight));
        w->scales = static_cast<const uint8_t*>(at(MoeSharedPart::kWeightScale));
        w->global_scale = static_cast<const float*>(at(MoeSharedPart::kWeightScale2));
        if (fields_.activation == Nvfp4Activation::kW4A4) {
          w->input_scale = static_cast<const float*>(at(MoeSharedPart::kInputScale));
        }
      }
      p.shared_gate_weight = static_cast<const __nv_bfloat16*>(inputs[nvfp4_moe_shared_gate_weight_pos(fields_)]);
    }
    const std::size_t ws_bytes = kn::nvfp4_moe_workspace_size(p);
    void* ws = nvfp4_aligned_workspace(workspace);
    if (ws == nullptr) {
      log("enqueue: no workspace (getWorkspaceSize was not honoured)");
      return -1;
    }
    return launch("nvfp4_moe", "", [&] { return kn::nvfp4_moe(p, ws, ws_bytes, stream); });
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

}  // namespace qwen35_trt::plugins
