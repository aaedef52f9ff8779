// CUDA entry points of _C. Importing the module never touches the driver: cudart is linked
// statically and loads libcuda lazily on the first runtime call, so a machine without a GPU or
// driver imports fine and cuda_device_count() returns 0.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "bindings.h"

#ifdef QWEN35_HAVE_CUDA
#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>

#include "qwen35_trt/kernels/nvfp4_dequant.h"
#include "qwen35_trt/common/nvfp4_codec.h"
#endif

namespace qwen35_trt::bindings {
namespace {

#ifdef QWEN35_HAVE_CUDA

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls start clean
    return 0;
  }
  return n;
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, DeviceFree>;

DeviceBuffer device_alloc(std::size_t bytes) {
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return DeviceBuffer(p);
}

// Host-to-host round trip through the kernel, for tests and the device check: copies the
// inputs to the current device, dequantizes, copies the bf16 bits back.
py::array_t<uint16_t> nvfp4_dequantize_bf16_cuda(const py::array& packed, const py::array& scales,
                                                 float weight_scale_2) {
  const auto p = checked_array<uint8_t>(packed, "packed");
  const auto s = checked_array<uint8_t>(scales, "scales", " (float8_e4m3fn bits)");
  auto shape = shape_of(packed, "packed", 1);
  const auto cols = static_cast<int64_t>(shape.back()) * 2;
  int64_t rows = 1;
  for (std::size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  if (cols % nvfp4::kBlockSize != 0) {
    throw py::value_error("packed: 2 * last dimension must be a multiple of 16");
  }
  auto expected_scales = shape;
  expected_scales.back() = cols / nvfp4::kBlockSize;
  if (shape_of(scales, "scales", 1) != expected_scales) {
    throw py::value_error("scales: expected shape " + shape_string(expected_scales));
  }
  if (!std::isfinite(weight_scale_2) || !(weight_scale_2 > 0.0f)) {
    throw py::value_error("weight_scale_2: must be finite and > 0");
  }
  // Arguments first, so that bad ones raise ValueError with or without a device.
  if (cuda_device_count() == 0) throw std::runtime_error("no CUDA device is available");
  shape.back() = cols;
  py::array_t<uint16_t> out(shape);
  {
    py::gil_scoped_release release;
    const auto d_packed = device_alloc(p.nbytes());
    const auto d_scales = device_alloc(s.nbytes());
    const auto d_s2 = device_alloc(sizeof(float));
    const auto d_out = device_alloc(out.nbytes());
    check_cuda(cudaMemcpy(d_packed.get(), p.data(), p.nbytes(), cudaMemcpyHostToDevice), "copy packed");
    check_cuda(cudaMemcpy(d_scales.get(), s.data(), s.nbytes(), cudaMemcpyHostToDevice), "copy scales");
    check_cuda(cudaMemcpy(d_s2.get(), &weight_scale_2, sizeof(float), cudaMemcpyHostToDevice),
               "copy weight_scale_2");
    kernels::Nvfp4DequantParams params;
    params.packed = static_cast<const uint8_t*>(d_packed.get());
    params.scales = static_cast<const uint8_t*>(d_scales.get());
    params.weight_scale_2 = static_cast<const float*>(d_s2.get());
    params.out = static_cast<__nv_bfloat16*>(d_out.get());
    params.batch = 1;
    params.rows = rows;
    params.cols = cols;
    check_cuda(kernels::nvfp4_dequantize_bf16(params, nullptr), "nvfp4_dequantize_bf16 launch");
    check_cuda(cudaMemcpy(out.mutable_data(), d_out.get(), out.nbytes(), cudaMemcpyDeviceToHost),
               "copy out");
  }
  return out;
}

#else

int cuda_device_count() { return 0; }

py::array_t<uint16_t> nvfp4_dequantize_bf16_cuda(const py::array&, const py::array&, float) {
  throw std::runtime_error("qwen35_trt._C was built without CUDA");
}

#endif

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_device_count", &cuda_device_count,
        "Number of visible CUDA devices; 0 without a GPU, a driver, or a CUDA build.");
  m.def("nvfp4_dequantize_bf16_cuda", &nvfp4_dequantize_bf16_cuda, py::arg("packed"),
        py::arg("scales"), py::arg("weight_scale_2"),
        "Runs the CUDA NVFP4 -> BF16 kernel on host numpy arrays (copies in and out); "
        "packed uint8 [..., cols / 2], scales uint8 [..., cols / 16] -> bf16 bits uint16 "
        "[..., cols]. RuntimeError without a CUDA device.");
}

}  // namespace qwen35_trt::bindings
