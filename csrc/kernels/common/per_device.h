// A value computed once per CUDA device and kept for the rest of the process: a device attribute,
// or a kernel's shared-memory opt-in and occupancy (both are per device: a process that drives two
// GPUs must set the opt-in on each and size grids by each one's SM count). Thread-safe; failures
// are returned, not cached, so a later call retries.
#pragma once

#include <mutex>
#include <unordered_map>

#include <cuda_runtime_api.h>

namespace qwen35_trt::kernels {

// The calling thread's current device (the one a launch would use).
inline cudaError_t current_device(int& device) {
  const cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) cudaGetLastError();  // leave no sticky error for the caller's next call
  return e;
}

template <typename T>
class PerDevice {
 public:
  // The value of `device`: cached, or `compute(T&)` (returning a cudaError_t) on the first call.
  // Runs compute with the lock held, so concurrent first calls compute once.
  template <typename F>
  cudaError_t get(int device, T& out, F&& compute) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = values_.find(device);
    if (it != values_.end()) {
      out = it->second;
      return cudaSuccess;
    }
    T value{};
    const cudaError_t e = compute(value);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return e;
    }
    values_.emplace(device, value);
    out = value;
    return cudaSuccess;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<int, T> values_;
};

}  // namespace qwen35_trt::kernels
