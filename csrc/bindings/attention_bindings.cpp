// numpy binding of the GatedAttention CPU reference (qwen35_trt/attention.h). Activations,
// weights and the KV pool are bfloat16 bit patterns in uint16 arrays; the pool is updated in
// place, so it must be a writeable C-contiguous array (a torch tensor's .view(torch.int16)
// .numpy() view works). Argument errors raise ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <string>
#include <vector>

#include "bindings.h"
#include "qwen35_trt/attention.h"

namespace qwen35_trt::bindings {
namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
Span<const T> cspan(const CArray<T>& a) {
  return {a.data(), static_cast<std::size_t>(a.size())};
}

// `arr` as a C-contiguous array of T with exactly `ndim` dimensions; ValueError naming it otherwise.
template <typename T>
CArray<T> array_nd(const py::array& arr, const char* name, py::ssize_t ndim, const char* layout) {
  CArray<T> a = checked_array<T>(arr, name, std::is_same_v<T, uint16_t> ? " (bf16 bits)" : "");
  if (a.ndim() != ndim) {
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions " + layout +
                          ", got shape " + shape_string(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim())));
  }
  return a;
}

py::array_t<uint16_t> gated_attention_ref(const py::array& qg_in, const py::array& k_in, const py::array& v_in,
                                          const py::array& q_norm_in, const py::array& k_norm_in, py::array kv_pool_in,
                                          const py::array& block_tables_in, const py::array& cu_in,
                                          const py::array& context_in, int64_t num_heads, int64_t num_kv_heads,
                                          int64_t head_dim, int64_t rotary_dim, float rope_theta, float eps,
                                          float scale) {
  const auto qg = array_nd<uint16_t>(qg_in, "qg", 2, "[T, nh * 2 * hd]");
  const auto k = array_nd<uint16_t>(k_in, "k", 2, "[T, nkv * hd]");
  const auto v = array_nd<uint16_t>(v_in, "v", 2, "[T, nkv * hd]");
  const auto q_norm = array_nd<uint16_t>(q_norm_in, "q_norm_weight", 1, "[hd]");
  const auto k_norm = array_nd<uint16_t>(k_norm_in, "k_norm_weight", 1, "[hd]");
  auto pool = array_nd<uint16_t>(kv_pool_in, "kv_pool", 5, "[num_blocks, 2, nkv, block_size, hd]");
  if (!kv_pool_in.writeable()) throw py::value_error("kv_pool: must be writeable (it is updated in place)");
  if (pool.shape(1) != 2 || pool.shape(2) != num_kv_heads || pool.shape(4) != head_dim) {
    throw py::value_error("kv_pool: expected shape [num_blocks, 2, nkv = " + std::to_string(num_kv_heads) +
                          ", block_size, hd = " + std::to_string(head_dim) + "], got " +
                          shape_string(std::vector<py::ssize_t>(pool.shape(), pool.shape() + 5)));
  }
  const auto tables = array_nd<int32_t>(block_tables_in, "block_tables", 2, "[B, max_blocks_per_seq]");
  const auto cu = array_nd<int32_t>(cu_in, "cu_seqlens", 1, "[B + 1]");
  const auto context = array_nd<int32_t>(context_in, "context_lens", 1, "[B]");
  if (tables.shape(0) != context.shape(0)) {
    throw py::value_error("block_tables: expected one row per sequence (B = " + std::to_string(context.shape(0)) +
                          "), got " + std::to_string(tables.shape(0)));
  }
  if (k.shape(0) != qg.shape(0) || v.shape(0) != qg.shape(0)) {
    throw py::value_error("k, v: expected the T = " + std::to_string(qg.shape(0)) + " rows of qg");
  }
  CArray<uint16_t> out({qg.shape(0), static_cast<py::ssize_t>(num_heads * head_dim)});
  attention::GatedAttentionArgs a;
  a.qg = cspan(qg);
  a.k = cspan(k);
  a.v = cspan(v);
  a.q_norm_weight = cspan(q_norm);
  a.k_norm_weight = cspan(k_norm);
  a.kv_pool = {pool.mutable_data(), static_cast<std::size_t>(pool.size())};
  a.block_tables = cspan(tables);
  a.cu_seqlens = cspan(cu);
  a.context_lens = cspan(context);
  a.out = {out.mutable_data(), static_cast<std::size_t>(out.size())};
  a.num_heads = num_heads;
  a.num_kv_heads = num_kv_heads;
  a.head_dim = head_dim;
  a.rotary_dim = rotary_dim;
  a.block_size = pool.shape(3);
  a.rope_theta = rope_theta;
  a.eps = eps;
  a.scale = scale;
  try {
    py::gil_scoped_release release;
    attention::gated_attention(a);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

}  // namespace

void register_attention(py::module_& m) {
  m.def("gated_attention_ref", &gated_attention_ref, py::arg("qg"), py::arg("k"), py::arg("v"),
        py::arg("q_norm_weight"), py::arg("k_norm_weight"), py::arg("kv_pool"), py::arg("block_tables"),
        py::arg("cu_seqlens"), py::arg("context_lens"), py::kw_only(), py::arg("num_heads"), py::arg("num_kv_heads"),
        py::arg("head_dim"), py::arg("rotary_dim"), py::arg("rope_theta"), py::arg("eps"), py::arg("scale"),
        "GatedAttention, CPU reference (docs/ops.md): bf16 bits in uint16 arrays; kv_pool "
        "[num_blocks, 2, nkv, block_size, hd] updated in place. Returns out [T, nh * hd] (uint16).");
}

}  // namespace qwen35_trt::bindings
