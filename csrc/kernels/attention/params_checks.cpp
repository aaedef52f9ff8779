// Host-side parameter checks and workspace size of the GatedAttention kernels (declared in
// qwen35_trt/kernels/attention.h). Plain C++: the launcher calls them before launching, the
// bindings turn the messages into ValueError, and the CPU-emulated kernel test links them
// without nvcc.
#include <cmath>
#include <cstdint>
#include <string>

#include "qwen35_trt/common/attention_math.h"
#include "qwen35_trt/kernels/attention.h"

namespace qwen35_trt::kernels {
namespace {

constexpr int64_t kInt32Max = 0x7FFFFFFF;

bool aligned(const void* p, std::size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// A bf16 [T, row] tensor with a token stride in elements (16-byte vector loads and stores).
std::string check_rows(const char* name, const void* ptr, int64_t stride, int64_t row) {
  if (ptr == nullptr) return std::string(name) + ": null";
  if (!aligned(ptr, 16)) return std::string(name) + ": must be 16-byte aligned";
  if (stride % 8 != 0 || stride < row) {
    return std::string(name) + "_stride: must be a multiple of 8 and >= " + std::to_string(row) + ", got " +
           std::to_string(stride);
  }
  return "";
}

std::string check_pointer(const char* name, const void* ptr, std::size_t alignment) {
  if (ptr == nullptr) return std::string(name) + ": null";
  if (!aligned(ptr, alignment)) return std::string(name) + ": must be " + std::to_string(alignment) + "-byte aligned";
  return "";
}

}  // namespace

std::size_t gated_attention_workspace_bytes(int64_t tokens, int num_heads, int head_dim) {
  if (tokens < 1 || num_heads < 1 || head_dim < 1) return 0;
  const std::size_t q = static_cast<std::size_t>(tokens) * num_heads * head_dim * sizeof(__nv_bfloat16);
  return (q + 255) / 256 * 256;
}

std::string validate_gated_attention(const GatedAttentionParams& p, std::size_t workspace_bytes) {
  const int hd = p.head_dim;
  if (hd < 32 || hd % 32 != 0 || hd > attention::kMaxHeadDim) {
    return "head_dim: must be a multiple of 32 and <= " + std::to_string(attention::kMaxHeadDim) + ", got " +
           std::to_string(hd);
  }
  if (p.num_heads < 1 || p.num_heads > 65535) {
    return "num_heads: must be in [1, 65535], got " + std::to_string(p.num_heads);
  }
  if (p.num_kv_heads < 1 || p.num_heads % p.num_kv_heads != 0) {
    return "num_kv_heads: must be >= 1 and divide num_heads, got num_kv_heads=" + std::to_string(p.num_kv_heads) +
           ", num_heads=" + std::to_string(p.num_heads);
  }
  if (p.rotary_dim < 0 || p.rotary_dim % 2 != 0 || p.rotary_dim > hd) {
    return "rotary_dim: must be even and in [0, head_dim=" + std::to_string(hd) + "], got " +
           std::to_string(p.rotary_dim);
  }
  if (!(p.rope_theta > 0.0f) || !std::isfinite(p.rope_theta)) {
    return "rope_theta: must be finite and > 0, got " + std::to_string(p.rope_theta);
  }
  if (!(p.eps >= 0.0f) || !std::isfinite(p.eps)) return "eps: must be finite and >= 0, got " + std::to_string(p.eps);
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) return "scale: must be finite and > 0, got " + std::to_string(p.scale);
  if (p.batch < 1) return "batch: must be >= 1, got " + std::to_string(p.batch);
  if (p.tokens < p.batch || p.tokens > kInt32Max) {
    return "tokens: must be >= batch (every sequence has a token) and fit in int32, got " + std::to_string(p.tokens) +
           " (batch " + std::to_string(p.batch) + ")";
  }
  if (p.block_size < 1) return "block_size: must be >= 1, got " + std::to_string(p.block_size);
  if (p.num_blocks < 1) return "num_blocks: must be >= 1, got " + std::to_string(p.num_blocks);
  if (p.max_blocks_per_seq < 1 || p.max_blocks_per_seq > kInt32Max) {
    return "max_blocks_per_seq: must be in [1, 2^31 - 1], got " + std::to_string(p.max_blocks_per_seq);
  }
  const int64_t q_row = static_cast<int64_t>(p.num_heads) * 2 * hd, kv_row = static_cast<int64_t>(p.num_kv_heads) * hd;
  std::string e = check_rows("qg", p.qg, p.qg_stride, q_row);
  if (e.empty()) e = check_rows("k", p.k, p.k_stride, kv_row);
  if (e.empty()) e = check_rows("v", p.v, p.v_stride, kv_row);
  if (e.empty()) e = check_rows("out", p.out, p.out_stride, static_cast<int64_t>(p.num_heads) * hd);
  if (e.empty()) e = check_pointer("q_norm_weight", p.q_norm_weight, 16);
  if (e.empty()) e = check_pointer("k_norm_weight", p.k_norm_weight, 16);
  if (e.empty()) e = check_pointer("kv_pool", p.kv_pool, 16);
  if (e.empty()) e = check_pointer("block_tables", p.block_tables, alignof(int32_t));
  if (e.empty()) e = check_pointer("cu_seqlens", p.cu_seqlens, alignof(int32_t));
  if (e.empty()) e = check_pointer("context_lens", p.context_lens, alignof(int32_t));
  if (!e.empty()) return e;
  const std::size_t need = gated_attention_workspace_bytes(p.tokens, p.num_heads, hd);
  if (workspace_bytes < need) {
    return "workspace_bytes: need " + std::to_string(need) + ", got " + std::to_string(workspace_bytes);
  }
  return "";
}

}  // namespace qwen35_trt::kernels
