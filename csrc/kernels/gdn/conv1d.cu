// CausalConv1d launcher; the kernel is in conv1d_kernel.cuh, the parameter checks in params_checks.cpp.
#include "conv1d_kernel.cuh"

namespace qwen35_trt::kernels {
namespace {

using namespace gdn_detail;
using namespace gdn_conv_impl;

template <int W>
cudaError_t launch(const CausalConv1dParams& p, cudaStream_t stream) {
  causal_conv1d_kernel<W><<<causal_conv1d_grid(p), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream) {
  if (!validate_causal_conv1d(p).empty()) return cudaErrorInvalidValue;
  switch (p.width) {
    case 2: return launch<2>(p, stream);
    case 3: return launch<3>(p, stream);
    case 4: return launch<4>(p, stream);
    case 5: return launch<5>(p, stream);
    case 6: return launch<6>(p, stream);
    case 7: return launch<7>(p, stream);
    case 8: return launch<8>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace qwen35_trt::kernels
