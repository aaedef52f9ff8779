// The qwen35_trt._C extension: CPU reference ops, CUDA kernels when built with CUDA, build info.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"

#ifndef QWEN35_VERSION
#define QWEN35_VERSION "unknown"
#endif
#ifndef QWEN35_CUDA_ARCHITECTURES
#define QWEN35_CUDA_ARCHITECTURES ""
#endif
#ifndef QWEN35_CXX_COMPILER
#define QWEN35_CXX_COMPILER "unknown"
#endif
#ifndef QWEN35_CUDA_COMPILER
#define QWEN35_CUDA_COMPILER ""
#endif
#ifndef QWEN35_BUILD_TYPE
#define QWEN35_BUILD_TYPE ""
#endif

namespace qwen35_trt::bindings {

std::string shape_string(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

std::vector<py::ssize_t> shape_of(const py::array& arr, const char* name, py::ssize_t min_ndim) {
  if (arr.ndim() < min_ndim) {
    throw py::value_error(std::string(name) + ": expected at least " + std::to_string(min_ndim) +
                          " dimension(s), got shape " +
                          shape_string(std::vector<py::ssize_t>(arr.shape(), arr.shape() + arr.ndim())));
  }
  return std::vector<py::ssize_t>(arr.shape(), arr.shape() + arr.ndim());
}

}  // namespace qwen35_trt::bindings

PYBIND11_MODULE(_C, m) {
  namespace py = pybind11;
  m.doc() = "qwen35_trt native extension: NVFP4 codec (CPU reference) and CUDA kernels.";
  m.def(
      "build_info",
      []() {
        py::dict d;
        d["version"] = QWEN35_VERSION;
#ifdef QWEN35_HAVE_CUDA
        d["cuda_enabled"] = true;
#else
        d["cuda_enabled"] = false;
#endif
        d["cuda_architectures"] = QWEN35_CUDA_ARCHITECTURES;
        d["compiler"] = QWEN35_CXX_COMPILER;
        d["cuda_compiler"] = QWEN35_CUDA_COMPILER;
        d["build_type"] = QWEN35_BUILD_TYPE;
        return d;
      },
      "How this extension was built: version, cuda_enabled, cuda_architectures, compiler, "
      "cuda_compiler, build_type.");
  qwen35_trt::bindings::register_nvfp4(m);
  qwen35_trt::bindings::register_cuda(m);
  qwen35_trt::bindings::register_cpu(m);
  qwen35_trt::bindings::register_moe(m);
  qwen35_trt::bindings::register_moe_cuda(m);
  // Gated DeltaNet
  qwen35_trt::bindings::register_gdn(m);
  qwen35_trt::bindings::register_gdn_cuda(m);
  // Gated attention
  qwen35_trt::bindings::register_attention(m);
  qwen35_trt::bindings::register_attention_cuda(m);
}
