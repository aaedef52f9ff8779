// Host-side pieces of the Gated DeltaNet kernels, shared by the launchers, the parameter checks
// (params_checks.cpp) and the tests: argument checks and the chunked prefill's workspace layout.
// Plain C++ (no device code), so that it also compiles without nvcc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_bf16.h>

#include "qwen35_trt/common/gdn_math.h"
#include "qwen35_trt/kernels/gdn.h"

namespace qwen35_trt::kernels::gdn_detail {

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

inline std::string check_sequences(const GdnSequences& s, bool need_varlen) {
  if (s.batch < 1 || s.batch > 65535) return "seqs.batch: must be in [1, 65535], got " + std::to_string(s.batch);
  if (s.tokens < s.batch) {
    return "seqs.tokens: must be >= batch (every sequence has a token), got " + std::to_string(s.tokens) + " < " +
           std::to_string(s.batch);
  }
  if (s.tokens > (int64_t{1} << 31) - 1) return "seqs.tokens: must fit in int32";
  if (s.num_slots < 1) return "seqs.num_slots: must be >= 1, got " + std::to_string(s.num_slots);
  if (s.slots == nullptr) return "seqs.slots: null";
  if (s.cu_seqlens == nullptr) {
    if (need_varlen) return "seqs.cu_seqlens: required";
    if (s.tokens != s.batch) return "seqs.tokens: decode (no cu_seqlens) takes one token per sequence";
  }
  if (s.max_seqlen < 0) return "seqs.max_seqlen: must be >= 0";
  return "";
}

inline std::string check_stride(const char* name, const void* ptr, int64_t stride, int64_t row_elems) {
  if (ptr == nullptr) return std::string(name) + ": null";
  if (!aligned16(ptr)) return std::string(name) + ": must be 16-byte aligned";
  if (stride % 8 != 0 || stride < row_elems) {
    return std::string(name) + "_stride: must be a multiple of 8 and >= " + std::to_string(row_elems) + ", got " +
           std::to_string(stride);
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Workspace, each part 256-byte aligned, per (chunk, value head) "mat" (chunk-major):
//   error int32 | chunk offsets int32 [B + 1]
//   -W = -Tw Kn, diag(exp(c_last - c)) Kn                         bf16 [mats, 64, dk] each
//   Aqk                                                           bf16 [mats, 64, 64]
//   U = Tu V, overwritten with V' by the state pass               bf16 [mats, 64, dv]
//   the state at each chunk's start                               bf16 [mats, dk, dv]
//   c                                                             fp32 [mats, 64]
//   exp(c_last)                                                   fp32 [mats]
// `chunks` is an upper bound of the number of chunks: sum ceil(len_b / 64) <= (T + 63 B) / 64.
// At Qwen3.5-35B-A3B's shapes (Hv 32, dk = dv = 128) that is 88 KiB per (chunk, head): 352 MiB
// for 8192 tokens in one sequence. (The output kernel normalises its q rows itself rather than
// reading a stored Qn: 16 KiB per (chunk, head) less.)

struct WorkspaceLayout {
  int64_t max_chunks = 0;
  std::size_t offsets = 0, wneg = 0, kdec = 0, aqk = 0, uv = 0, states = 0, gcum = 0, decay = 0, total = 0;
};

inline std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

inline WorkspaceLayout workspace_layout(int64_t batch, int64_t tokens, int num_v_heads, int head_k_dim,
                                        int head_v_dim) {
  constexpr std::size_t C = qwen35_trt::gdn::kChunkSize;
  constexpr std::size_t H = sizeof(__nv_bfloat16);
  const std::size_t dk = static_cast<std::size_t>(head_k_dim), dv = static_cast<std::size_t>(head_v_dim);
  WorkspaceLayout w;
  w.max_chunks = (tokens + static_cast<int64_t>(C - 1) * batch) / static_cast<int64_t>(C);
  const std::size_t mats = static_cast<std::size_t>(w.max_chunks) * num_v_heads;
  w.offsets = 256;
  w.wneg = w.offsets + align256(sizeof(int32_t) * static_cast<std::size_t>(batch + 1));
  w.kdec = w.wneg + align256(mats * C * dk * H);
  w.aqk = w.kdec + align256(mats * C * dk * H);
  w.uv = w.aqk + align256(mats * C * C * H);
  w.states = w.uv + align256(mats * C * dv * H);
  w.gcum = w.states + align256(mats * dk * dv * H);
  w.decay = w.gcum + align256(mats * C * sizeof(float));
  w.total = w.decay + align256(mats * sizeof(float));
  return w;
}

struct Workspace {
  int32_t* error;
  int32_t* offsets;  // [B + 1]
  __nv_bfloat16* wneg;
  __nv_bfloat16* kdec;
  __nv_bfloat16* aqk;
  __nv_bfloat16* uv;
  __nv_bfloat16* states;
  float* gcum;
  float* decay;
  int64_t max_chunks;
};

inline Workspace workspace_of(void* base, const WorkspaceLayout& l) {
  char* p = static_cast<char*>(base);
  const auto bf = [p](std::size_t off) { return reinterpret_cast<__nv_bfloat16*>(p + off); };
  return {reinterpret_cast<int32_t*>(p), reinterpret_cast<int32_t*>(p + l.offsets), bf(l.wneg), bf(l.kdec),
          bf(l.aqk), bf(l.uv), bf(l.states), reinterpret_cast<float*>(p + l.gcum), reinterpret_cast<float*>(p + l.decay),
          l.max_chunks};
}

}  // namespace qwen35_trt::kernels::gdn_detail
