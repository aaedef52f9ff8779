// CUDA entry point of the GatedAttention kernels (qwen35_trt/kernels/attention.h). It takes raw
// device pointers (as integers, 0 = null) and a cudaStream_t (as an integer, 0 = the default
// stream), so that any framework can call it; python/qwen35_trt/ops/attention_cuda.py wraps it for
// torch tensors. Unknown or missing keyword arguments raise TypeError naming them (strict_args.h);
// invalid parameters raise ValueError with the launcher's message; CUDA errors raise RuntimeError.
// The launch is asynchronous. Built without CUDA, every function raises RuntimeError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "strict_args.h"

#ifdef QWEN35_HAVE_CUDA
#include "qwen35_trt/kernels/attention.h"
#endif

namespace qwen35_trt::bindings {
namespace {

// The keyword arguments of gated_attention_cuda, named as the fields of GatedAttentionParams.
const std::vector<std::string> kRequired = {
    "qg", "qg_stride", "k", "k_stride", "v", "v_stride", "q_norm_weight", "k_norm_weight", "kv_pool",
    "num_blocks", "block_size", "block_tables", "max_blocks_per_seq", "cu_seqlens", "context_lens", "batch",
    "tokens", "out", "out_stride", "num_heads", "num_kv_heads", "head_dim", "rotary_dim", "rope_theta", "eps",
    "scale", "workspace", "workspace_bytes"};
const std::vector<std::string> kOptional = {"stream"};

const char* kDoc =
    "Enqueues the GatedAttention kernels (bf16, paged KV cache; docs/ops.md). Keyword arguments (pointers and the "
    "stream as integers, 0 = null): qg, qg_stride ([T, nh * 2 * hd]), k, k_stride, v, v_stride ([T, nkv * hd]; "
    "token strides in elements), q_norm_weight, k_norm_weight ([hd]), kv_pool ([num_blocks, 2, nkv, block_size, "
    "hd], in place), num_blocks, block_size, block_tables (int32 [B, max_blocks_per_seq]), max_blocks_per_seq, "
    "cu_seqlens (int32 [B + 1]), context_lens (int32 [B]), batch, tokens, out, out_stride ([T, nh * hd]), "
    "num_heads, num_kv_heads, head_dim, rotary_dim, rope_theta, eps, scale, workspace (16-byte aligned), "
    "workspace_bytes (gated_attention_workspace_bytes), stream (default 0).";

#ifdef QWEN35_HAVE_CUDA
namespace kn = qwen35_trt::kernels;

void gated_attention(const py::kwargs& kw) {
  const StrictArgs a(kw, "gated_attention_cuda", kRequired, kOptional, StrictArgs::Kind::kKwargs);
  kn::GatedAttentionParams p;
  p.qg = a.pointer<const __nv_bfloat16>("qg");
  p.qg_stride = a.get<int64_t>("qg_stride");
  p.k = a.pointer<const __nv_bfloat16>("k");
  p.k_stride = a.get<int64_t>("k_stride");
  p.v = a.pointer<const __nv_bfloat16>("v");
  p.v_stride = a.get<int64_t>("v_stride");
  p.q_norm_weight = a.pointer<const __nv_bfloat16>("q_norm_weight");
  p.k_norm_weight = a.pointer<const __nv_bfloat16>("k_norm_weight");
  p.kv_pool = a.pointer<__nv_bfloat16>("kv_pool");
  p.num_blocks = a.get<int64_t>("num_blocks");
  p.block_size = a.get<int32_t>("block_size");
  p.block_tables = a.pointer<const int32_t>("block_tables");
  p.max_blocks_per_seq = a.get<int64_t>("max_blocks_per_seq");
  p.cu_seqlens = a.pointer<const int32_t>("cu_seqlens");
  p.context_lens = a.pointer<const int32_t>("context_lens");
  p.batch = a.get<int64_t>("batch");
  p.tokens = a.get<int64_t>("tokens");
  p.out = a.pointer<__nv_bfloat16>("out");
  p.out_stride = a.get<int64_t>("out_stride");
  p.num_heads = a.get<int32_t>("num_heads");
  p.num_kv_heads = a.get<int32_t>("num_kv_heads");
  p.head_dim = a.get<int32_t>("head_dim");
  p.rotary_dim = a.get<int32_t>("rotary_dim");
  p.rope_theta = a.get<float>("rope_theta");
  p.eps = a.get<float>("eps");
  p.scale = a.get<float>("scale");
  void* ws = a.pointer<void>("workspace");
  const auto ws_bytes = static_cast<std::size_t>(a.get<uint64_t>("workspace_bytes"));
  const auto stream = reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(a.get<uint64_t>("stream", 0)));
  const std::string e = kn::validate_gated_attention(p, ws_bytes);
  if (!e.empty()) throw py::value_error(e);
  if (ws == nullptr || reinterpret_cast<uintptr_t>(ws) % 16 != 0) {
    throw py::value_error("workspace: must be a non-null, 16-byte aligned device pointer");
  }
  cudaError_t status;
  {
    py::gil_scoped_release release;
    status = kn::gated_attention(p, ws, ws_bytes, stream);
  }
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("gated_attention launch: ") + cudaGetErrorString(status));
  }
}

std::size_t workspace_bytes(int64_t tokens, int num_heads, int head_dim) {
  return kn::gated_attention_workspace_bytes(tokens, num_heads, head_dim);
}

#else

[[noreturn]] void no_cuda() { throw std::runtime_error("qwen35_trt._C was built without CUDA"); }
void gated_attention(const py::kwargs&) { no_cuda(); }
std::size_t workspace_bytes(int64_t, int, int) { no_cuda(); }

#endif

}  // namespace

void register_attention_cuda(py::module_& m) {
  m.def("gated_attention_cuda", &gated_attention, kDoc);
  m.def("gated_attention_workspace_bytes", &workspace_bytes, py::arg("tokens"), py::arg("num_heads"),
        py::arg("head_dim"),
        "Workspace bytes gated_attention_cuda needs for T tokens (the normalised queries [T, nh, hd] bf16, "
        "rounded up to 256).");
}

}  // namespace qwen35_trt::bindings
