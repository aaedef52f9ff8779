// ctest for the CUDA NVFP4 -> BF16 kernel: bit-exact against the CPU reference on random inputs.
// Exits 77 (ctest SKIP_RETURN_CODE) with "SKIPPED: no CUDA device" when no GPU is usable.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_test_util.h"
#include "qwen35_trt/kernels/nvfp4_dequant.h"
#include "qwen35_trt/nvfp4.h"

namespace fp4 = qwen35_trt::nvfp4;
namespace kn = qwen35_trt::kernels;

namespace {

template <typename T>
T* to_device(const std::vector<T>& host) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, host.size() * sizeof(T) + 16));
  CUDA_OK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

// One random case: `batch` matrices [rows, cols], per-matrix global scales `s2`.
void check_case(std::mt19937& rng, int64_t batch, int64_t rows, int64_t cols,
                const std::vector<float>& s2) {
  const std::size_t per = static_cast<std::size_t>(rows * cols);
  std::vector<uint8_t> packed(batch * per / 2), scales(batch * per / 16);
  for (auto& b : packed) b = static_cast<uint8_t>(rng());
  for (auto& b : scales) {
    do b = static_cast<uint8_t>(rng()); while ((b & 0x7F) == 0x7F);  // no NaN scales
  }
  std::vector<uint16_t> expected(batch * per);
  for (int64_t b = 0; b < batch; ++b) {
    fp4::dequantize_bf16({packed.data() + b * per / 2, per / 2},
                        {scales.data() + b * per / 16, per / 16}, rows, cols, s2[b],
                        {expected.data() + b * per, per});
  }
  kn::Nvfp4DequantParams p;
  p.packed = to_device(packed);
  p.scales = to_device(scales);
  p.weight_scale_2 = to_device(s2);
  void* out = nullptr;
  CUDA_OK(cudaMalloc(&out, batch * per * 2 + 16));
  CUDA_OK(cudaMemset(out, 0xFF, batch * per * 2));
  p.out = static_cast<__nv_bfloat16*>(out);
  p.batch = batch;
  p.rows = rows;
  p.cols = cols;
  CUDA_OK(kn::nvfp4_dequantize_bf16(p, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint16_t> got(batch * per);
  CUDA_OK(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));
  std::size_t mismatches = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != expected[i] && mismatches++ == 0) first = i;
  }
  const std::string where = "batch " + std::to_string(batch) + " rows " + std::to_string(rows) +
                            " cols " + std::to_string(cols);
  CHECK_MSG(mismatches == 0, where + ": " + std::to_string(mismatches) + " mismatches, first at " +
                                 std::to_string(first) + " got " + std::to_string(got[first]) +
                                 " want " + std::to_string(expected[first]));

  // Invalid parameters are refused without launching.
  kn::Nvfp4DequantParams bad = p;
  bad.cols = 24;
  CHECK(kn::nvfp4_dequantize_bf16(bad, nullptr) == cudaErrorInvalidValue);
  bad = p;
  bad.out = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(out) + 2);
  CHECK(kn::nvfp4_dequantize_bf16(bad, nullptr) == cudaErrorInvalidValue);
  bad = p;
  bad.rows = 0;
  CHECK(kn::nvfp4_dequantize_bf16(bad, nullptr) == cudaSuccess);

  cudaFree(const_cast<uint8_t*>(p.packed));
  cudaFree(const_cast<uint8_t*>(p.scales));
  cudaFree(const_cast<float*>(p.weight_scale_2));
  cudaFree(out);
}

}  // namespace

int main() {
  if (!qwen35_trt::testing::have_cuda_device()) return qwen35_trt::testing::kSkip;

  std::mt19937 rng(2024);
  check_case(rng, 1, 1, 16, {0.5f});
  check_case(rng, 1, 37, 96, {1.0f / 2688.0f});
  check_case(rng, 3, 129, 256, {1e-3f, 2.5e-2f, 7.0f});
  // Tiny global scales drive the products into fp32/bf16 subnormals (the kernel must not flush).
  check_case(rng, 2, 64, 2048, {1e-38f, 3e-36f});
  check_case(rng, 4, 512, 512, {1e-4f, 2e-4f, 3e-4f, 4e-4f});
  return qwen35_trt::test::report();
}
