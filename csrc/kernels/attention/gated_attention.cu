// GatedAttention launcher: prepare then attend on one stream (the kernels are in
// attention_kernels.cuh, the parameter checks in params_checks.cpp).
#include "attention_kernels.cuh"

namespace qwen35_trt::kernels {
namespace {

using namespace attention_impl;

// attend reads the keys prepare wrote: stream order is the only synchronisation needed.
template <int E>
cudaError_t launch(const GatedAttentionParams& p, bf16* q, cudaStream_t stream) {
  gated_attention_prepare_kernel<E><<<prepare_grid(p), kThreads, 0, stream>>>(p, q);
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  gated_attention_attend_kernel<E><<<attend_grid(p), kThreads, 0, stream>>>(p, q);
  return cudaGetLastError();
}

}  // namespace

cudaError_t gated_attention(const GatedAttentionParams& p, void* workspace, std::size_t workspace_bytes,
                            cudaStream_t stream) {
  if (!validate_gated_attention(p, workspace_bytes).empty()) return cudaErrorInvalidValue;
  // The queries are read and written as rows of head_dim bf16 (16-byte vectors).
  if (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 16 != 0) return cudaErrorInvalidValue;
  bf16* q = static_cast<bf16*>(workspace);
  switch (p.head_dim / 32) {
    case 1: return launch<1>(p, q, stream);
    case 2: return launch<2>(p, q, stream);
    case 3: return launch<3>(p, q, stream);
    case 4: return launch<4>(p, q, stream);
    case 5: return launch<5>(p, q, stream);
    case 6: return launch<6>(p, q, stream);
    case 7: return launch<7>(p, q, stream);
    case 8: return launch<8>(p, q, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace qwen35_trt::kernels
