// CUDA entry points of Nvfp4MoE / Nvfp4Linear for python/qwen35_trt/ops/moe_cuda.py. Tensors
// travel as device pointers (ints, e.g. torch's data_ptr()) so that _C links no torch; the Python
// wrapper validates shapes and dtypes, allocates outputs and workspace, and passes the stream.
// The argument dicts are read strictly (strict_args.h): an unknown or missing key raises KeyError
// naming the key and its dict, a value of the wrong type TypeError, before any CUDA call. Launch
// failures raise RuntimeError; bad parameters (the launcher's cudaErrorInvalidValue) raise
// ValueError. Without CUDA in the build every function raises RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "strict_args.h"

#ifdef QWEN35_HAVE_CUDA
#include "qwen35_trt/kernels/moe.h"
#endif

namespace qwen35_trt::bindings {
namespace {

#ifdef QWEN35_HAVE_CUDA

namespace kn = qwen35_trt::kernels;

// The keys of one NVFP4 weight operand (ops/moe_cuda.py `_operand`). Every stride is required:
// a stride left at zero would make every expert read expert 0's weights.
const std::vector<std::string> kWeightKeys = {
    "packed", "scales", "global_scale", "packed_stride", "scale_stride", "global_stride",
    "input_stride", "row_offset", "layout"};
const std::vector<std::string> kWeightOptional = {"input_scale"};  // W4A4 only

// {"packed", "scales", "global_scale", "input_scale"?: pointers; "packed_stride",
//  "scale_stride", "global_stride", "input_stride", "row_offset": ints; "layout": str}
kn::Nvfp4DeviceWeights weights_of(const StrictArgs& parent, const char* key) {
  const StrictArgs d = parent.nested(key, kWeightKeys, kWeightOptional);
  kn::Nvfp4DeviceWeights w;
  w.packed = d.pointer<const uint8_t>("packed");
  w.scales = d.pointer<const uint8_t>("scales");
  w.global_scale = d.pointer<const float>("global_scale");
  w.input_scale = d.pointer<const float>("input_scale", nullptr);
  w.packed_stride = d.get<int64_t>("packed_stride");
  w.scale_stride = d.get<int64_t>("scale_stride");
  w.global_stride = d.get<int32_t>("global_stride");
  w.input_stride = d.get<int32_t>("input_stride");
  w.row_offset = d.get<int32_t>("row_offset");
  const auto layout = d.get<std::string>("layout");
  if (layout != "row_major" && layout != "swizzled_128x4" && layout != "w4a16_fragments") {
    d.value_error("layout", "expected 'row_major', 'swizzled_128x4' or 'w4a16_fragments', got '" + layout + "'");
  }
  w.layout = parse_scale_layout(layout);
  return w;
}

kn::Nvfp4Backend backend_of(const StrictArgs& a, const std::string& s) {
  if (s == "auto") return kn::Nvfp4Backend::kAuto;
  if (s == "w4a16") return kn::Nvfp4Backend::kW4A16;
  if (s == "native") return kn::Nvfp4Backend::kNative;
  a.value_error("backend", "expected 'auto', 'w4a16' or 'native', got '" + s + "'");
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

// The Nvfp4MoE argument dict (ops/moe_cuda.py `nvfp4_moe`); optional keys: the shared expert
// (all five keys or none), the routing outputs and the backend.
const std::vector<std::string> kMoeKeys = {
    "hidden", "router_logits", "router_logits_bf16", "out", "tokens", "hidden_size", "intermediate",
    "num_experts", "top_k", "gate", "up", "down"};
const std::vector<std::string> kMoeSharedKeys = {
    "shared_intermediate", "shared_gate", "shared_up", "shared_down", "shared_gate_weight"};
const std::vector<std::string> kMoeOptional = {
    "shared_intermediate", "shared_gate", "shared_up", "shared_down", "shared_gate_weight",
    "topk_ids", "topk_weights", "backend"};

kn::Nvfp4MoeParams moe_params(const py::dict& args) {
  const StrictArgs a(args, "Nvfp4MoE", kMoeKeys, kMoeOptional);
  kn::Nvfp4MoeParams p;
  p.hidden = a.pointer<const __nv_bfloat16>("hidden");
  p.router_logits = a.pointer<const void>("router_logits");
  p.router_logits_bf16 = a.get<bool>("router_logits_bf16");
  p.out = a.pointer<__nv_bfloat16>("out");
  p.tokens = a.get<int32_t>("tokens");
  p.hidden_size = a.get<int32_t>("hidden_size");
  p.intermediate = a.get<int32_t>("intermediate");
  p.num_experts = a.get<int32_t>("num_experts");
  p.top_k = a.get<int32_t>("top_k");
  p.gate = weights_of(a, "gate");
  p.up = weights_of(a, "up");
  p.down = weights_of(a, "down");
  p.shared_intermediate = a.get<int32_t>("shared_intermediate", 0);
  if (p.shared_intermediate > 0) {
    for (const auto& key : kMoeSharedKeys) {
      if (!a.has(key.c_str())) a.key_error("missing key '" + key + "' (required with shared_intermediate > 0)");
    }
    p.shared_gate = weights_of(a, "shared_gate");
    p.shared_up = weights_of(a, "shared_up");
    p.shared_down = weights_of(a, "shared_down");
    p.shared_gate_weight = a.pointer<const __nv_bfloat16>("shared_gate_weight");
  } else {
    for (const auto& key : kMoeSharedKeys) {
      if (key != "shared_intermediate" && a.has(key.c_str())) {
        a.key_error("key '" + key + "' needs shared_intermediate > 0 (it would be ignored)");
      }
    }
  }
  p.topk_ids = a.pointer<int32_t>("topk_ids", nullptr);
  p.topk_weights = a.pointer<float>("topk_weights", nullptr);
  p.backend = backend_of(a, a.get<std::string>("backend", "auto"));
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

// The Nvfp4Linear argument dict (ops/moe_cuda.py `nvfp4_linear`).
const std::vector<std::string> kLinearKeys = {"x", "y", "rows", "n", "k", "weight"};
const std::vector<std::string> kLinearOptional = {"backend"};

kn::Nvfp4LinearParams linear_params(const py::dict& args) {
  const StrictArgs a(args, "Nvfp4Linear", kLinearKeys, kLinearOptional);
  kn::Nvfp4LinearParams p;
  p.x = a.pointer<const __nv_bfloat16>("x");
  p.y = a.pointer<__nv_bfloat16>("y");
  p.rows = a.get<int64_t>("rows");
  p.n = a.get<int32_t>("n");
  p.k = a.get<int32_t>("k");
  p.w = weights_of(a, "weight");
  p.backend = backend_of(a, a.get<std::string>("backend", "auto"));
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
