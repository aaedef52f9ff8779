// Shared by the CUDA ctest executables: error checking and the no-GPU skip (exit code 77, which
// CMake registers as SKIP_RETURN_CODE, so a machine without a device reports "Skipped").
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace qwen35_trt::testing {

constexpr int kSkip = 77;

#define CUDA_OK(call)                                                                       \
  do {                                                                                      \
    const cudaError_t qwen35_status_ = (call);                                              \
    if (qwen35_status_ != cudaSuccess) {                                                    \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                   \
                   cudaGetErrorString(qwen35_status_));                                     \
      std::exit(1);                                                                         \
    }                                                                                       \
  } while (0)

// True when device 0 exists (and prints its name); otherwise prints the SKIPPED line.
inline bool have_cuda_device() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device (cudaGetDeviceCount: %s)\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return false;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  return true;
}

}  // namespace qwen35_trt::testing
