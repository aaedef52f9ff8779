// The Nvfp4Linear TensorRT adapter (see nvfp4_linear_plugin.h): fields, dtypes, shapes and the
// workspace come from nvfp4_linear_rules; enqueue fills kernels::Nvfp4LinearParams as
// python/qwen35_trt/ops/moe_cuda.py does and calls the same launcher.
#include "nvfp4_linear_plugin.h"

#include <exception>
#include <string>

#include "plugin_dtypes.h"
#include "qwen35_trt/kernels/moe.h"

namespace qwen35_trt::plugins {
namespace {

using nvinfer1::DataType;
namespace kn = qwen35_trt::kernels;

// The launcher's params for rows x [n, k] with null pointers: enough for the workspace size,
// which depends only on the shapes, the layout and whether input scales are present.
kn::Nvfp4LinearParams shape_params(const Nvfp4LinearFields& f, int64_t rows, int64_t n, int64_t k) {
  kn::Nvfp4LinearParams p;
  p.rows = rows;
  p.n = static_cast<int32_t>(n);
  p.k = static_cast<int32_t>(k);
  p.w.layout = f.scale_layout == Nvfp4ScaleLayout::kSwizzled128x4    ? kn::ScaleLayout::kSwizzled128x4
                : f.scale_layout == Nvfp4ScaleLayout::kW4A16Fragments ? kn::ScaleLayout::kW4A16Fragments
                                                                      : kn::ScaleLayout::kRowMajor;
  // moe_cuda.py passes "auto" and the input scale whenever the weight carries one: the launcher
  // then runs the native W4A4 path where it is compiled in and the device is sm_100, else W4A16.
  p.backend = kn::Nvfp4Backend::kAuto;
  return p;
}

}  // namespace

std::string Nvfp4LinearOp::counts_error(const Fields& f, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == nvfp4_linear_inputs(f) && nbOutputs == kNvfp4LinearOutputs) return "";
  return std::string("expected ") +
         (nvfp4_linear_inputs(f) == 5 ? "5 inputs (x, weight, weight_scale, weight_scale_2, input_scale)"
                                      : "4 inputs (x, weight, weight_scale, weight_scale_2)") +
         " for activation \"" + nvfp4_activation_name(f.activation) + "\" and 1 output, got " +
         std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
}

bool Nvfp4LinearOp::type_ok(int32_t pos, DataType type, const Fields& f) { return type == to_trt(nvfp4_linear_dtype(pos, f)); }

std::string Nvfp4LinearOp::type_error(int32_t pos, DataType got, const Fields& f) {
  const ElementType want = nvfp4_linear_dtype(pos, f);
  return type_error_message(nvfp4_linear_tensor_name(pos, f), element_type_name(want), got, want == ElementType::kInt8);
}

DataType Nvfp4LinearOp::output_type(int32_t output, int32_t nbInputs, const Fields& f) {
  return to_trt(nvfp4_linear_dtype(nbInputs + output, f));
}

void Nvfp4LinearOp::output_shapes(const nvinfer1::DimsExprs* inputs, nvinfer1::DimsExprs* outputs, int32_t,
                                  const Fields&, nvinfer1::IExprBuilder&) {
  // y [T, N]: T from x, N from the weight.
  outputs[0].nbDims = 2;
  outputs[0].d[0] = inputs[kLinX].d[0];
  outputs[0].d[1] = inputs[kLinWeight].d[0];
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
    return launch("nvfp4_linear", "", [&] { return kn::nvfp4_linear(p, ws, ws_bytes, stream); });
  } catch (const std::exception& e) {
    log(std::string("enqueue: ") + e.what());
    return -1;
  }
}

}  // namespace qwen35_trt::plugins
