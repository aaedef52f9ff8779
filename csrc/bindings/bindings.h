// Shared helpers of the _C module: numpy argument checks and the per-family registration hooks.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>
#include <vector>

#include "qwen35_trt/common/moe_math.h"

namespace qwen35_trt::bindings {

namespace py = pybind11;

void register_nvfp4(py::module_& m);
void register_cuda(py::module_& m);
void register_cpu(py::module_& m);       // CPU threads and ISA of the reference kernels
void register_moe(py::module_& m);       // CPU reference of Nvfp4MoE / Nvfp4Linear
void register_moe_cuda(py::module_& m);  // their CUDA kernels (raise without CUDA)

// "row_major" | "swizzled_128x4" | "w4a16_fragments" and "w4a16" | "w4a4"; ValueError otherwise.
moe::ScaleLayout parse_scale_layout(const std::string& s);
moe::Activation parse_activation(const std::string& s);
// Gated DeltaNet: CPU reference (gdn_bindings.cpp) and CUDA kernels (gdn_cuda_bindings.cpp).
void register_gdn(py::module_& m);
void register_gdn_cuda(py::module_& m);
// Gated attention: CPU reference (attention_bindings.cpp) and CUDA kernels (attention_cuda_bindings.cpp).
void register_attention(py::module_& m);
void register_attention_cuda(py::module_& m);

template <typename T>
const char* dtype_name();
template <>
inline const char* dtype_name<float>() { return "float32"; }
template <>
inline const char* dtype_name<uint8_t>() { return "uint8"; }
template <>
inline const char* dtype_name<uint16_t>() { return "uint16"; }
template <>
inline const char* dtype_name<int32_t>() { return "int32"; }

// The array's shape as a string such as "(3, 4)", for error messages.
std::string shape_string(const std::vector<py::ssize_t>& shape);

// Returns `arr` as an array_t<T> without copying, or raises ValueError naming `name` when the
// dtype differs or the array is not C-contiguous. `what` adds a hint such as "(bf16 bits)".
template <typename T>
py::array_t<T, py::array::c_style> checked_array(const py::array& arr, const char* name,
                                                 const char* what = "") {
  if (!arr.dtype().is(py::dtype::of<T>())) {
    throw py::value_error(std::string(name) + ": expected dtype " + dtype_name<T>() + what +
                          ", got " + std::string(py::str(arr.dtype())));
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + ": expected a C-contiguous array");
  }
  return py::array_t<T, py::array::c_style>::ensure(arr);
}

// The shape of `arr` as a vector, requiring at least `min_ndim` dimensions.
std::vector<py::ssize_t> shape_of(const py::array& arr, const char* name, py::ssize_t min_ndim);

}  // namespace qwen35_trt::bindings
