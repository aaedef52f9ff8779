// CUDA launchers of the Nvfp4MoE and Nvfp4Linear contracts (docs/ops.md; the exact math in the CPU
// reference qwen35_trt/moe.h, the parts both share in qwen35_trt/common/).
//
// Two implementations, chosen at run time per call:
//   W4A16   (kernels/moe/grouped_gemm_w4a16_mma.cu) NVFP4 weights dequantized to BF16 in
//           registers, mma.sync BF16 tensor cores, fp32 accumulation. Built for every target
//           architecture (sm_80 instructions only); the only path on Hopper and RTX Blackwell.
//   native  (kernels/moe/grouped_gemm_nvfp4_sm100.cu) W4A4: activations quantized per 16 with the
//           static input_scale, CUTLASS block-scaled FP4 MMA (tcgen05). Compiled only for sm_100a,
//           used on compute capability 10.0 when the weights carry input scales, unless the call
//           asks for W4A16 or QWEN35_TRT_DISABLE_NATIVE_FP4=1 is set.
//
// Kernels never allocate: every launcher takes a device workspace of at least the size its
// *_workspace_size function returns (an upper bound that depends only on the shapes), and
// enqueues everything on `stream`. All pointers are device pointers. Launchers return
// cudaErrorInvalidValue (and launch nothing) for bad shapes or misaligned pointers; the host
// wrappers (bindings) validate first and raise errors that name the argument.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "qwen35_trt/common/moe_math.h"  // ScaleLayout, Activation, kMaxTopK

namespace qwen35_trt::kernels {

using moe::Activation;
using moe::ScaleLayout;

// NVFP4 weights on the device: `groups` matrices (one per expert, or one) of which rows
// [row_offset, row_offset + N) are used, each [rows, K] with K-major packed codes.
//   packed  group g at packed + g * packed_stride (bytes); row r at + r * K / 2
//   scales  group g at scales + g * scale_stride (bytes); layout as in moe::scale_offset
//   layout  kW4A16Fragments: each row's codes permuted in 64-code groups and UE5M3 scales
//           (qwen35_trt/common/w4a16_fragments.h); the W4A16 GEMM only (sm_90, sm_120 engines).
//           kSwizzled128x4: what the sm_100a native path requires.
//   global_scale  weight_scale_2 of group g at global_scale[g * global_stride] (fp32, device)
//   input_scale   W4A4 only: activation global of group g at input_scale[g * input_stride]
// The fused gate_up tensor of an engine is two views: gate (row_offset 0) and up (row_offset I),
// both with global_stride 2 into the [E, 2] weight_scale_2 (up starting one float later).
struct Nvfp4DeviceWeights {
  const uint8_t* packed = nullptr;
  const uint8_t* scales = nullptr;
  const float* global_scale = nullptr;
  const float* input_scale = nullptr;
  int64_t packed_stride = 0;
  int64_t scale_stride = 0;
  int32_t global_stride = 0;
  int32_t input_stride = 0;
  int32_t row_offset = 0;
  ScaleLayout layout = ScaleLayout::kRowMajor;
};

enum class Nvfp4Backend : int { kAuto = 0, kW4A16 = 1, kNative = 2 };

// Nvfp4Linear: y [rows, n] = x [rows, k] W^T (one weight matrix: w.*_stride ignored).
// k a positive multiple of 16, n >= 1; x rows 16-byte aligned (k % 8 == 0 holds).
struct Nvfp4LinearParams {
  const __nv_bfloat16* x = nullptr;
  __nv_bfloat16* y = nullptr;
  int64_t rows = 0;
  int32_t n = 0;
  int32_t k = 0;
  Nvfp4DeviceWeights w;
  Nvfp4Backend backend = Nvfp4Backend::kAuto;
};

// Nvfp4MoE: out [T, H] from hidden [T, H] and router_logits [T, E] (bf16 or fp32).
// H and I positive multiples of 16; 1 <= top_k <= min(E, 32); E <= kMaxExperts.
struct Nvfp4MoeParams {
  const __nv_bfloat16* hidden = nullptr;
  const void* router_logits = nullptr;
  bool router_logits_bf16 = true;
  __nv_bfloat16* out = nullptr;
  int32_t tokens = 0;
  int32_t hidden_size = 0;
  int32_t intermediate = 0;
  int32_t num_experts = 0;
  int32_t top_k = 0;
  Nvfp4DeviceWeights gate, up, down;  // groups = experts
  // The shared expert; shared_intermediate == 0 means none.
  int32_t shared_intermediate = 0;
  Nvfp4DeviceWeights shared_gate, shared_up, shared_down;  // one group each
  const __nv_bfloat16* shared_gate_weight = nullptr;      // [H]
  // Optional: the routing, for tests ([T, top_k]; nullptr keeps it in the workspace).
  int32_t* topk_ids = nullptr;
  float* topk_weights = nullptr;
  Nvfp4Backend backend = Nvfp4Backend::kAuto;
};

inline constexpr int kMaxExperts = 1024;

// Depends on the sizes, the shared expert's presence and the build only (pointers may be null):
// 0 for invalid sizes.
std::size_t nvfp4_moe_workspace_size(const Nvfp4MoeParams& p);
cudaError_t nvfp4_moe(const Nvfp4MoeParams& p, void* workspace, std::size_t workspace_bytes,
                      cudaStream_t stream);

std::size_t nvfp4_linear_workspace_size(const Nvfp4LinearParams& p);
cudaError_t nvfp4_linear(const Nvfp4LinearParams& p, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream);

// Whether this build contains the sm_100a native W4A4 path, and whether it would run on `device`
// (compiled in, compute capability 10.0, and not disabled by QWEN35_TRT_DISABLE_NATIVE_FP4).
bool nvfp4_native_compiled();
bool nvfp4_native_available(int device);

}  // namespace qwen35_trt::kernels
