// Host-side parameter checks and workspace sizing of the Gated DeltaNet kernels (declared in
// qwen35_trt/kernels/gdn.h). Plain C++: the launchers call these before launching, the bindings
// turn their messages into ValueError, and the CPU-emulated kernel test links them without nvcc.
#include "gdn_host.h"

namespace qwen35_trt::kernels {

using namespace gdn_detail;

std::string validate_causal_conv1d(const CausalConv1dParams& p) {
  if (p.channels <= 0 || p.channels % 8 != 0) {
    return "channels: must be a positive multiple of 8, got " + std::to_string(p.channels);
  }
  if (p.width < 2 || p.width > qwen35_trt::gdn::kMaxConvWidth) {
    return "width: must be in [2, 8], got " + std::to_string(p.width);
  }
  std::string e = check_sequences(p.seqs, false);
  if (e.empty()) e = check_stride("x", p.x, p.x_stride, p.channels);
  if (e.empty()) e = check_stride("y", p.y, p.y_stride, p.channels);
  if (e.empty() && (p.weight == nullptr || !aligned16(p.weight))) e = "weight: null or not 16-byte aligned";
  if (e.empty() && (p.state_pool == nullptr || !aligned16(p.state_pool))) e = "state_pool: null or not 16-byte aligned";
  return e;
}

std::string validate_gdn_recurrent(const GatedDeltaNetParams& p) {
  if (p.num_k_heads < 1 || p.num_v_heads < 1 || p.num_v_heads % p.num_k_heads != 0) {
    return "num_v_heads: must be a positive multiple of num_k_heads, got Hv=" + std::to_string(p.num_v_heads) +
           ", Hk=" + std::to_string(p.num_k_heads);
  }
  if (p.num_v_heads > 65535) return "num_v_heads: must be <= 65535";
  if (p.head_k_dim != 32 && p.head_k_dim != 64 && p.head_k_dim != 128 && p.head_k_dim != 256) {
    return "head_k_dim: the recurrent kernel supports 32, 64, 128 or 256, got " + std::to_string(p.head_k_dim);
  }
  if (p.head_v_dim <= 0 || p.head_v_dim % 32 != 0) {
    return "head_v_dim: must be a positive multiple of 32, got " + std::to_string(p.head_v_dim);
  }
  if (!(p.scale > 0.0f) || !(p.scale < 3.0e38f)) return "scale: must be finite and > 0";
  std::string e = check_sequences(p.seqs, false);
  const int64_t qk_row = static_cast<int64_t>(p.num_k_heads) * p.head_k_dim;
  const int64_t v_row = static_cast<int64_t>(p.num_v_heads) * p.head_v_dim;
  if (e.empty()) e = check_stride("q", p.q, p.q_stride, qk_row);
  if (e.empty()) e = check_stride("k", p.k, p.k_stride, qk_row);
  if (e.empty()) e = check_stride("v", p.v, p.v_stride, v_row);
  if (e.empty()) e = check_stride("o", p.o, p.o_stride, v_row);
  if (e.empty() && (p.a == nullptr || p.a_stride < p.num_v_heads)) e = "a: null, or a_stride < num_v_heads";
  if (e.empty() && (p.b == nullptr || p.b_stride < p.num_v_heads)) e = "b: null, or b_stride < num_v_heads";
  if (e.empty() && (p.A_log == nullptr || p.dt_bias == nullptr)) e = "A_log / dt_bias: null";
  if (e.empty() && (p.state_pool == nullptr || !aligned16(p.state_pool))) e = "state_pool: null or not 16-byte aligned";
  return e;
}

std::size_t gdn_chunk_prefill_workspace_bytes(int64_t batch, int64_t tokens, int num_v_heads, int head_k_dim,
                                              int head_v_dim) {
  if (batch < 1 || tokens < 0 || num_v_heads < 1 || head_k_dim < 1 || head_v_dim < 1) return 0;
  return workspace_layout(batch, tokens, num_v_heads, head_k_dim, head_v_dim).total;
}

std::string validate_gdn_chunk_prefill(const GatedDeltaNetParams& p, std::size_t workspace_bytes) {
  std::string e = validate_gdn_recurrent(p);  // the shared field checks
  if (!e.empty() && e.rfind("head_k_dim", 0) != 0) return e;
  if (p.head_k_dim != 64 && p.head_k_dim != 128) {
    return "head_k_dim: the chunked prefill supports 64 or 128, got " + std::to_string(p.head_k_dim);
  }
  if (p.seqs.cu_seqlens == nullptr) return "seqs.cu_seqlens: required for the chunked prefill";
  const std::size_t need =
      gdn_chunk_prefill_workspace_bytes(p.seqs.batch, p.seqs.tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim);
  if (workspace_bytes < need) {
    return "workspace_bytes: need " + std::to_string(need) + ", got " + std::to_string(workspace_bytes);
  }
  if (static_cast<int64_t>(workspace_layout(p.seqs.batch, p.seqs.tokens, p.num_v_heads, p.head_k_dim, p.head_v_dim).max_chunks) > 0x7FFFFFFF) {
    return "seqs.tokens: too many chunks for one launch";
  }
  return "";
}

std::string gdn_prefill_error_message(int32_t error) {
  std::string m;
  if (error & kGdnErrorCuSeqlens) {
    m += "cu_seqlens: must start at 0, increase strictly (every sequence >= 1 token) and end at the number of tokens";
  }
  if (error & kGdnErrorSlot) m += std::string(m.empty() ? "" : "; ") + "slots: a slot id is outside [0, num_slots)";
  return m;
}

}  // namespace qwen35_trt::kernels
