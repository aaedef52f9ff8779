// CUDA entry points of Nvfp4MoE / Nvfp4Linear for python/qwen35_trt/ops/moe_cuda.py. Tensors
// travel as device pointers (ints, e.g. torch's data_ptr()) so that _C links no torch; the Python
// wrapper validates shapes and dtypes, allocates outputs and workspace, and passes the stream.
// Launch failures raise RuntimeError; bad parameters (the launcher's cudaErrorInvalidValue) raise
// ValueError. Without CUDA in the build every function raises RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bindings.h"

#ifdef QWEN35_HAVE_CUDA
#include "qwen35_trt/kernels/moe.h"
#endif

namespace qwen35_trt::bindings {
namespace {

#ifdef QWEN35_HAVE_CUDA

namespace kn = qwen35_trt::kernels;

template <typename T>
T* ptr(const py::dict& d, const char* key, bool required = true) {
  if (!d.contains(key) || d[key].is_none()) {
    if (required) throw py::value_error(std::string("missing device pointer '") + key + "'");
    return nullptr;
  }
  return reinterpret_cast<T*>(static_cast<uintptr_t>(d[key].cast<uint64_t>()));
}

int64_t integer(const py::dict& d, const char* key, int64_t fallback = 0) {
  return d.contains(key) && !d[key].is_none() ? d[key].cast<int64_t>() : fallback;
}

// {"packed", "scales", "global_scale", "input_scale"?: pointers; "packed_stride",
//  "scale_stride", "global_stride", "input_stride", "row_offset": ints; "layout": str}
kn::Nvfp4DeviceWeights weights_of(const py::dict& d) {
  kn::Nvfp4DeviceWeights w;
  w.packed = ptr<const uint8_t>(d, "packed");
  w.scales = ptr<const uint8_t>(d, "scales");
  w.global_scale = ptr<const float>(d, "global_scale");
  w.input_scale = ptr<const float>(d, "input_scale", false);
  w.packed_stride = integer(d, "packed_stride");
  w.scale_stride = integer(d, "scale_stride");
  w.global_stride = static_cast<int32_t>(integer(d, "global_stride"));
  w.input_stride = static_cast<int32_t>(integer(d, "input_stride"));
  w.row_offset = static_cast<int32_t>(integer(d, "row_offset"));
  w.layout = parse_scale_layout(d.contains("layout") ? d["layout"].cast<std::string>() : "row_major");
  return w;
}

kn::Nvfp4Backend backend_of(const std::string& s) {
  if (s == "auto") return kn::Nvfp4Backend::kAuto;
  if (s == "w4a16") return kn::Nvfp4Backend::kW4A16;
  if (s == "native") return kn::Nvfp4Backend::kNative;
  throw py::value_error("backend: expected 'auto', 'w4a16' or 'native', got '" + s + "'");
}

void check_launch(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  if (status == cudaErrorInvalidValue) {
    throw py::value_error(std::string(what) + ": invalid arguments (shapes, strides or alignment)");
  }
  if (status == cudaErrorNotSupported) {
    throw std::runtime_error(std::string(what) + ": the native NVFP4 path is not available here");
  }
  throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

kn::Nvfp4MoeParams moe_params(const py::dict& a) {
  kn::Nvfp4MoeParams p;
  p.hidden = ptr<const __nv_bfloat16>(a, "hidden");
  p.router_logits = ptr<const void>(a, "router_logits");
  p.router_logits_bf16 = a["router_logits_bf16"].cast<bool>();
  p.out = ptr<__nv_bfloat16>(a, "out");
  p.tokens = static_cast<int32_t>(integer(a, "tokens"));
  p.hidden_size = static_cast<int32_t>(integer(a, "hidden_size"));
  p.intermediate = static_cast<int32_t>(integer(a, "intermediate"));
  p.num_experts = static_cast<int32_t>(integer(a, "num_experts"));
  p.top_k = static_cast<int32_t>(integer(a, "top_k"));
  p.gate = weights_of(a["gate"].cast<py::dict>());
  p.up = weights_of(a["up"].cast<py::dict>());
  p.down = weights_of(a["down"].cast<py::dict>());
  p.shared_intermediate = static_cast<int32_t>(integer(a, "shared_intermediate"));
  if (p.shared_intermediate > 0) {
    p.shared_gate = weights_of(a["shared_gate"].cast<py::dict>());
    p.shared_up = weights_of(a["shared_up"].cast<py::dict>());
    p.shared_down = weights_of(a["shared_down"].cast<py::dict>());
    p.shared_gate_weight = ptr<const __nv_bfloat16>(a, "shared_gate_weight");
  }
  p.topk_ids = ptr<int32_t>(a, "topk_ids", false);
  p.topk_weights = ptr<float>(a, "topk_weights", false);
  p.backend = backend_of(a.contains("backend") ? a["backend"].cast<std::string>() : "auto");
  return p;
}

std::size_t moe_workspace_size(const py::dict& a) {
  const auto p = moe_params(a);
  const std::size_t n = kn::nvfp4_moe_workspace_size(p);
  if (n == 0 && p.tokens > 0) throw py::value_error("nvfp4_moe: invalid shapes");
  return n;
}

void moe(const py::dict& a, uint64_t workspace, std::size_t workspace_bytes, uint64_t stream) {
  const auto p = moe_params(a);
  cudaError_t status;
  {
    py::gil_scoped_release release;
    status = kn::nvfp4_moe(p, reinterpret_cast<void*>(static_cast<uintptr_t>(workspace)),
                           workspace_bytes, reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(stream)));
  }
  check_launch(status, "nvfp4_moe");
}

kn::Nvfp4LinearParams linear_params(const py::dict& a) {
  kn::Nvfp4LinearParams p;
  p.x = ptr<const __nv_bfloat16>(a, "x");
  p.y = ptr<__nv_bfloat16>(a, "y");
  p.rows = integer(a, "rows");
  p.n = static_cast<int32_t>(integer(a, "n"));
  p.k = static_cast<int32_t>(integer(a, "k"));
  p.w = weights_of(a["weight"].cast<py::dict>());
  p.backend = backend_of(a.contains("backend") ? a["backend"].cast<std::string>() : "auto");
  return p;
}

std::size_t linear_workspace_size(const py::dict& a) {
  return kn::nvfp4_linear_workspace_size(linear_params(a));
}

void linear(const py::dict& a, uint64_t workspace, std::size_t workspace_bytes, uint64_t stream) {
  const auto p = linear_params(a);
  cudaError_t status;
  {
    py::gil_scoped_release release;
    status = kn::nvfp4_linear(p, reinterpret_cast<void*>(static_cast<uintptr_t>(workspace)),
                              workspace_bytes, reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(stream)));
  }
  check_launch(status, "nvfp4_linear");
}

bool native_compiled() { return kn::nvfp4_native_compiled(); }
bool native_available(int device) { return kn::nvfp4_native_available(device); }

#else

[[noreturn]] void no_cuda() { throw std::runtime_error("qwen35_trt._C was built without CUDA"); }
std::size_t moe_workspace_size(const py::dict&) { no_cuda(); }
void moe(const py::dict&, uint64_t, std::size_t, uint64_t) { no_cuda(); }
std::size_t linear_workspace_size(const py::dict&) { no_cuda(); }
void linear(const py::dict&, uint64_t, std::size_t, uint64_t) { no_cuda(); }
bool native_compiled() { return false; }
bool native_available(int) { return false; }

#endif

}  // namespace

void register_moe_cuda(py::module_& m) {
  m.def("nvfp4_moe_cuda_workspace_size", &moe_workspace_size, py::arg("args"),
        "Workspace bytes of nvfp4_moe_cuda for the argument dict (see ops/moe_cuda.py).");
  m.def("nvfp4_moe_cuda", &moe, py::arg("args"), py::arg("workspace"), py::arg("workspace_bytes"),
        py::arg("stream"), "Enqueue Nvfp4MoE on a CUDA stream; all tensors are device pointers.");
  m.def("nvfp4_linear_cuda_workspace_size", &linear_workspace_size, py::arg("args"));
  m.def("nvfp4_linear_cuda", &linear, py::arg("args"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("stream"),
        "Enqueue Nvfp4Linear on a CUDA stream; all tensors are device pointers.");
  m.def("nvfp4_native_compiled", &native_compiled,
        "Whether the sm_100a native W4A4 NVFP4 path is compiled into this build.");
  m.def("nvfp4_native_available", &native_available, py::arg("device") = 0,
        "Whether the native path would run on this device (compute capability 10.0, not "
        "disabled by QWEN35_TRT_DISABLE_NATIVE_FP4).");
}

}  // namespace qwen35_trt::bindings
