// CUDA entry points of the Gated DeltaNet kernels (qwen35_trt/kernels/gdn.h). They take raw
// device pointers (as integers, 0 = null) and a cudaStream_t (as an integer, 0 = the default
// stream), so that any framework can call them; python/qwen35_trt/ops/gdn_cuda.py wraps them for
// torch tensors. Unknown or missing keyword arguments raise TypeError naming them (strict_args.h);
// invalid parameters raise ValueError with the launcher's message; CUDA errors raise RuntimeError. Launches are asynchronous. Built without CUDA, every function raises
// RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "strict_args.h"

#ifdef QWEN35_HAVE_CUDA
#include "qwen35_trt/kernels/gdn.h"
#endif

namespace qwen35_trt::bindings {
namespace {

#ifdef QWEN35_HAVE_CUDA
namespace kn = qwen35_trt::kernels;

template <typename T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

kn::GdnSequences sequences(uintptr_t slots, uintptr_t cu_seqlens, uintptr_t has_initial_state, int64_t batch,
                           int64_t tokens, int64_t num_slots, int64_t max_seqlen) {
  kn::GdnSequences s;
  s.slots = ptr<const int32_t>(slots);
  s.cu_seqlens = ptr<const int32_t>(cu_seqlens);
  s.has_initial_state = ptr<const uint8_t>(has_initial_state);
  s.batch = batch;
  s.tokens = tokens;
  s.num_slots = num_slots;
  s.max_seqlen = max_seqlen;
  return s;
}

void check_launch(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

void causal_conv1d(uintptr_t x, int64_t x_stride, uintptr_t weight, uintptr_t state_pool, uintptr_t y, int64_t y_stride,
                   int64_t channels, int width, uintptr_t slots, uintptr_t cu_seqlens, uintptr_t has_initial_state,
                   int64_t batch, int64_t tokens, int64_t num_slots, int64_t max_seqlen, uintptr_t stream) {
  kn::CausalConv1dParams p;
  p.x = ptr<const __nv_bfloat16>(x);
  p.x_stride = x_stride;
  p.weight = ptr<const __nv_bfloat16>(weight);
  p.state_pool = ptr<__nv_bfloat16>(state_pool);
  p.y = ptr<__nv_bfloat16>(y);
  p.y_stride = y_stride;
  p.channels = channels;
  p.width = width;
  p.seqs = sequences(slots, cu_seqlens, has_initial_state, batch, tokens, num_slots, max_seqlen);
  const std::string e = kn::validate_causal_conv1d(p);
  if (!e.empty()) throw py::value_error(e);
  py::gil_scoped_release release;
  check_launch(kn::causal_conv1d(p, reinterpret_cast<cudaStream_t>(stream)), "causal_conv1d launch");
}

// Keyword arguments of gdn_cuda_recurrent and gdn_cuda_chunk_prefill (ops/gdn_cuda.py). An unknown
// one raises TypeError: a misspelt optional argument (say `cu_seqlen`) would otherwise silently
// turn a prefill into a decode.
const std::vector<std::string> kGdnKeys = {
    "q", "q_stride", "k", "k_stride", "v", "v_stride", "a", "a_stride", "b", "b_stride", "A_log", "dt_bias",
    "state_pool", "o", "o_stride", "num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim", "scale",
    "slots", "batch", "tokens", "num_slots"};
const std::vector<std::string> kGdnOptional = {"use_qk_l2norm", "cu_seqlens", "has_initial_state", "max_seqlen",
                                               "stream"};

StrictArgs gdn_args(const py::kwargs& kw, const char* function, std::vector<std::string> extra_required) {
  std::vector<std::string> required = kGdnKeys;
  required.insert(required.end(), extra_required.begin(), extra_required.end());
  return StrictArgs(kw, function, required, kGdnOptional, StrictArgs::Kind::kKwargs);
}

kn::GatedDeltaNetParams gdn_params(const StrictArgs& a) {
  kn::GatedDeltaNetParams p;
  p.q = a.pointer<const __nv_bfloat16>("q");
  p.q_stride = a.get<int64_t>("q_stride");
  p.k = a.pointer<const __nv_bfloat16>("k");
  p.k_stride = a.get<int64_t>("k_stride");
  p.v = a.pointer<const __nv_bfloat16>("v");
  p.v_stride = a.get<int64_t>("v_stride");
  p.a = a.pointer<const __nv_bfloat16>("a");
  p.a_stride = a.get<int64_t>("a_stride");
  p.b = a.pointer<const __nv_bfloat16>("b");
  p.b_stride = a.get<int64_t>("b_stride");
  p.A_log = a.pointer<const float>("A_log");
  p.dt_bias = a.pointer<const float>("dt_bias");
  p.state_pool = a.pointer<float>("state_pool");
  p.o = a.pointer<__nv_bfloat16>("o");
  p.o_stride = a.get<int64_t>("o_stride");
  p.num_k_heads = a.get<int32_t>("num_k_heads");
  p.num_v_heads = a.get<int32_t>("num_v_heads");
  p.head_k_dim = a.get<int32_t>("head_k_dim");
  p.head_v_dim = a.get<int32_t>("head_v_dim");
  p.scale = a.get<float>("scale");
  p.use_qk_l2norm = a.get<bool>("use_qk_l2norm", true);
  p.seqs = sequences(a.get<uint64_t>("slots"), a.get<uint64_t>("cu_seqlens", 0), a.get<uint64_t>("has_initial_state", 0),
                     a.get<int64_t>("batch"), a.get<int64_t>("tokens"), a.get<int64_t>("num_slots"),
                     a.get<int64_t>("max_seqlen", 0));
  return p;
}

cudaStream_t stream_of(const StrictArgs& a) {
  return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(a.get<uint64_t>("stream", 0)));
}

const char* kGdnFields =
    "Keyword arguments (pointers and the stream as integers, 0 = null): q, q_stride, k, k_stride, v, v_stride, "
    "a, a_stride, b, b_stride (bf16 [T, ...] with token strides in elements), A_log, dt_bias (fp32 [Hv]), "
    "state_pool (fp32 [num_slots, Hv, dk, dv]), o, o_stride, num_k_heads, num_v_heads, head_k_dim, head_v_dim, "
    "scale, use_qk_l2norm (default True), slots (int32 [B]), cu_seqlens (int32 [B + 1]; 0 = decode), "
    "has_initial_state (uint8 [B]; 0 = all read), batch, tokens, num_slots, max_seqlen (default 0), stream.";

void gdn_recurrent(const py::kwargs& kw) {
  const StrictArgs a = gdn_args(kw, "gdn_cuda_recurrent", {});
  const kn::GatedDeltaNetParams p = gdn_params(a);
  const cudaStream_t stream = stream_of(a);
  const std::string e = kn::validate_gdn_recurrent(p);
  if (!e.empty()) throw py::value_error(e);
  py::gil_scoped_release release;
  check_launch(kn::gdn_recurrent(p, stream), "gdn_recurrent launch");
}

void gdn_chunk_prefill(const py::kwargs& kw) {
  const StrictArgs a = gdn_args(kw, "gdn_cuda_chunk_prefill", {"workspace", "workspace_bytes"});
  const kn::GatedDeltaNetParams p = gdn_params(a);
  const cudaStream_t stream = stream_of(a);
  void* ws = a.pointer<void>("workspace");
  const auto ws_bytes = static_cast<std::size_t>(a.get<uint64_t>("workspace_bytes"));
  if (ws == nullptr || reinterpret_cast<uintptr_t>(ws) % 256 != 0) {
    throw py::value_error("workspace: must be a non-null, 256-byte aligned device pointer");
  }
  const std::string e = kn::validate_gdn_chunk_prefill(p, ws_bytes);
  if (!e.empty()) throw py::value_error(e);
  py::gil_scoped_release release;
  check_launch(kn::gdn_chunk_prefill(p, ws, ws_bytes, stream), "gdn_chunk_prefill launch");
}

void gdn_prefill_check(uintptr_t workspace, uintptr_t stream) {
  int32_t error = 0;
  {
    py::gil_scoped_release release;
    check_launch(kn::gdn_prefill_read_error(ptr<const void>(workspace), &error, reinterpret_cast<cudaStream_t>(stream)),
                 "gdn_prefill_check");
  }
  if (error != 0) throw py::value_error(kn::gdn_prefill_error_message(error));
}

std::size_t workspace_bytes(int64_t batch, int64_t tokens, int num_v_heads, int head_k_dim, int head_v_dim) {
  return kn::gdn_chunk_prefill_workspace_bytes(batch, tokens, num_v_heads, head_k_dim, head_v_dim);
}

std::size_t shared_bytes(int head_k_dim) { return kn::gdn_chunk_prefill_shared_bytes(head_k_dim); }

#else

[[noreturn]] void no_cuda() { throw std::runtime_error("qwen35_trt._C was built without CUDA"); }
void causal_conv1d(uintptr_t, int64_t, uintptr_t, uintptr_t, uintptr_t, int64_t, int64_t, int, uintptr_t, uintptr_t,
                   uintptr_t, int64_t, int64_t, int64_t, int64_t, uintptr_t) {
  no_cuda();
}
void gdn_recurrent(const py::kwargs&) { no_cuda(); }
void gdn_chunk_prefill(const py::kwargs&) { no_cuda(); }
void gdn_prefill_check(uintptr_t, uintptr_t) { no_cuda(); }
std::size_t workspace_bytes(int64_t, int64_t, int, int, int) { no_cuda(); }
std::size_t shared_bytes(int) { no_cuda(); }
const char* kGdnFields = "";

#endif

}  // namespace

void register_gdn_cuda(py::module_& m) {
  m.def("gdn_cuda_causal_conv1d", &causal_conv1d, py::kw_only(), py::arg("x"), py::arg("x_stride"), py::arg("weight"),
        py::arg("state_pool"), py::arg("y"), py::arg("y_stride"), py::arg("channels"), py::arg("width"),
        py::arg("slots"), py::arg("cu_seqlens"), py::arg("has_initial_state"), py::arg("batch"), py::arg("tokens"),
        py::arg("num_slots"), py::arg("max_seqlen") = 0, py::arg("stream") = 0,
        "Enqueues the CausalConv1d kernel (bf16): x [T, C] / y [T, C] with row strides, weight [C, W], state_pool "
        "[num_slots, C, W - 1] (in place), slots int32 [B], cu_seqlens int32 [B + 1] or 0 (decode), "
        "has_initial_state uint8 [B] or 0. Device pointers as integers.");
  m.def("gdn_cuda_recurrent", &gdn_recurrent,
        (std::string("Enqueues the token-by-token GatedDeltaNet kernel (decode; any cu_seqlens). ") + kGdnFields).c_str());
  m.def("gdn_cuda_chunk_prefill", &gdn_chunk_prefill,
        (std::string("Enqueues the chunked GatedDeltaNet prefill; also workspace, workspace_bytes "
                     "(gdn_cuda_chunk_prefill_workspace_bytes). ") +
         kGdnFields)
            .c_str());
  m.def("gdn_cuda_chunk_prefill_workspace_bytes", &workspace_bytes, py::arg("batch"), py::arg("tokens"),
        py::arg("num_v_heads"), py::arg("head_k_dim"), py::arg("head_v_dim"),
        "Workspace bytes gdn_cuda_chunk_prefill needs for B sequences of T tokens in all.");
  m.def("gdn_cuda_chunk_prefill_shared_bytes", &shared_bytes, py::arg("head_k_dim"),
        "Dynamic shared memory per block the chunked prefill needs (0: head_k_dim not supported); devices with a "
        "smaller per-block opt-in limit run the recurrent kernel instead.");
  m.def("gdn_cuda_prefill_check", &gdn_prefill_check, py::arg("workspace"), py::arg("stream") = 0,
        "Synchronizes the stream and raises ValueError when the last chunked prefill using this workspace found "
        "invalid cu_seqlens or slots on the device (it then wrote nothing).");
}

}  // namespace qwen35_trt::bindings
