// NVFP4 -> BF16 weight dequantization on the GPU (W4A16 on Hopper dequantizes this way; also the
// repack/validation path). Bit-exact with qwen35_trt::nvfp4::dequantize_bf16 on the CPU.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace qwen35_trt::kernels {

// A batch of `batch` matrices of shape [rows, cols] (for example the experts [E, N, K] of a MoE
// projection), all device pointers, dense row-major:
//   packed          uint8  [batch, rows, cols / 2]   E2M1 pairs, low nibble = even column
//   scales          uint8  [batch, rows, cols / 16]  float8_e4m3fn block scales (not swizzled)
//   weight_scale_2  float  [batch]                   per-matrix global scale
//   out             bf16   [batch, rows, cols]
//   out = bf16_rne(e2m1(code) * (float(scale) * weight_scale_2[b]))
// Requirements (else the launcher returns cudaErrorInvalidValue and launches nothing):
// cols a positive multiple of 16; packed 8-byte aligned; out 16-byte aligned; batch, rows >= 0.
// The kernel reads one 16-element block (8 packed bytes + 1 scale) per thread and writes it with
// two 16-byte stores. It allocates nothing and needs no workspace.
struct Nvfp4DequantParams {
  const uint8_t* packed = nullptr;
  const uint8_t* scales = nullptr;
  const float* weight_scale_2 = nullptr;
  __nv_bfloat16* out = nullptr;
  int64_t batch = 1;
  int64_t rows = 0;
  int64_t cols = 0;
};

// Enqueues the kernel on `stream`; returns the launch status (cudaSuccess when there is nothing
// to do).
cudaError_t nvfp4_dequantize_bf16(const Nvfp4DequantParams& params, cudaStream_t stream);

}  // namespace qwen35_trt::kernels
