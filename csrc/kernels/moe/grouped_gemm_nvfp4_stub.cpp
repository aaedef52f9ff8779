// Stand-in for grouped_gemm_nvfp4_sm100.cu in builds that do not target sm_100a (for example the
// sm_90a-only build of bench/device_check.sh): the native W4A4 path reports itself absent and the
// launchers fall back to the W4A16 kernels.
#include "moe_internal.h"

namespace qwen35_trt::kernels::moe_detail {

bool native_compiled() { return false; }
std::size_t native_moe_scratch_bytes(const Nvfp4MoeParams&) { return 0; }
cudaError_t native_moe_experts(const Nvfp4MoeParams&, const NativeMoeWorkspace&, cudaStream_t) {
  return cudaErrorNotSupported;
}
cudaError_t native_shared_expert(const Nvfp4MoeParams&, __nv_bfloat16*, __nv_bfloat16*, void*,
                                 cudaStream_t) {
  return cudaErrorNotSupported;
}
std::size_t native_linear_workspace_bytes(const Nvfp4LinearParams&) { return 0; }
cudaError_t native_linear(const Nvfp4LinearParams&, void*, cudaStream_t) {
  return cudaErrorNotSupported;
}

}  // namespace qwen35_trt::kernels::moe_detail
