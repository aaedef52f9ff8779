// Launcher of the chunked GatedDeltaNet prefill on mma.sync tensor cores (checks and workspace size
// in params_checks.cpp); the kernels and the algorithm are described in chunk_prefill_kernels.cuh.
#include "chunk_prefill_kernels.cuh"

namespace qwen35_trt::kernels {
namespace {

using namespace gdn_detail;
using namespace gdn_chunk_impl;

template <int DK>
cudaError_t launch(const GatedDeltaNetParams& p, const Workspace& ws, cudaStream_t stream) {
  gdn_plan_kernel<<<1, kPlanThreads, 0, stream>>>(p.seqs, ws);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  constexpr std::size_t t_bytes = TransformSmem<DK>::kBytes;
  e = cudaFuncSetAttribute(gdn_chunk_transform_kernel<DK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(t_bytes));
  if (e != cudaSuccess) return e;
  gdn_chunk_transform_kernel<DK><<<transform_grid(p, ws), kThreads, t_bytes, stream>>>(p, ws);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  constexpr std::size_t s_bytes = StateSmem<DK>::kBytes;
  e = cudaFuncSetAttribute(gdn_chunk_state_kernel<DK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(s_bytes));
  if (e != cudaSuccess) return e;
  gdn_chunk_state_kernel<DK><<<state_grid(p), kThreads, s_bytes, stream>>>(p, ws);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  constexpr std::size_t o_bytes = OutputSmem<DK>::kBytes;
  e = cudaFuncSetAttribute(gdn_chunk_output_kernel<DK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(o_bytes));
  if (e != cudaSuccess) return e;
  gdn_chunk_output_kernel<DK><<<output_grid(p, ws), kThreads, o_bytes, stream>>>(p, ws);
  return cudaGetLastError();
}

constexpr std::size_t max3(std::size_t a, std::size_t b, std::size_t c) {
  return a > b ? (a > c ? a : c) : (b > c ? b : c);
}
template <int DK>
constexpr std::size_t shared_bytes() {
  return max3(TransformSmem<DK>::kBytes, StateSmem<DK>::kBytes, OutputSmem<DK>::kBytes);
}

}  // namespace

std::size_t gdn_chunk_prefill_shared_bytes(int head_k_dim) {
  return head_k_dim == 64 ? shared_bytes<64>() : head_k_dim == 128 ? shared_bytes<128>() : 0;
}

cudaError_t gdn_chunk_prefill(const GatedDeltaNetParams& p, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream) {
  if (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 256 != 0) return cudaErrorInvalidValue;
  if (!validate_gdn_chunk_prefill(p, workspace_bytes).empty()) return cudaErrorInvalidValue;
  int device = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (e != cudaSuccess) return e;
  if (gdn_chunk_prefill_shared_bytes(p.head_k_dim) > static_cast<std::size_t>(optin)) return cudaErrorNotSupported;
  const Workspace ws = workspace_of(workspace, workspace_layout(p.seqs.batch, p.seqs.tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim));
  return p.head_k_dim == 64 ? launch<64>(p, ws, stream) : launch<128>(p, ws, stream);
}

cudaError_t gdn_prefill_read_error(const void* workspace, int32_t* error, cudaStream_t stream) {
  if (workspace == nullptr || error == nullptr) return cudaErrorInvalidValue;
  cudaError_t e = cudaMemcpyAsync(error, workspace, sizeof(int32_t), cudaMemcpyDeviceToHost, stream);
  if (e != cudaSuccess) return e;
  return cudaStreamSynchronize(stream);
}

}  // namespace qwen35_trt::kernels
