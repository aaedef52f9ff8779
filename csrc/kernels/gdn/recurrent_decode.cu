// Launcher of the recurrent GatedDeltaNet kernel (recurrent_kernel.cuh; checks in params_checks.cpp).
#include "recurrent_kernel.cuh"

namespace qwen35_trt::kernels {

using gdn_recurrent_impl::gdn_recurrent_grid;
using gdn_recurrent_impl::gdn_recurrent_kernel;
using gdn_recurrent_impl::kThreads;

cudaError_t gdn_recurrent(const GatedDeltaNetParams& p, cudaStream_t stream) {
  if (!validate_gdn_recurrent(p).empty()) return cudaErrorInvalidValue;
  const dim3 grid = gdn_recurrent_grid(p);
  switch (p.head_k_dim) {
    case 32: gdn_recurrent_kernel<32><<<grid, kThreads, 0, stream>>>(p); break;
    case 64: gdn_recurrent_kernel<64><<<grid, kThreads, 0, stream>>>(p); break;
    case 128: gdn_recurrent_kernel<128><<<grid, kThreads, 0, stream>>>(p); break;
    case 256: gdn_recurrent_kernel<256><<<grid, kThreads, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace qwen35_trt::kernels
