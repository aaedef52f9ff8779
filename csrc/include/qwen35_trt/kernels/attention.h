// Gated attention with a paged KV cache, CUDA (bf16): the GatedAttention contract of docs/ops.md
// and of the CPU reference (qwen35_trt/attention.h), prefill chunks and decode tokens of many
// sequences in one call. Batch-invariant: a token's result depends only on its own sequence (no
// split or tile choice depends on the batch).
//
// Two kernels on `stream`: `prepare` (one thread per token and head: q/k RMSNorm and RoPE; the
// normalised queries go to the workspace, the new keys and values into the KV pool at their
// positions) and `attend` (one warp per token and query head: the scores of positions 0..pos in
// two passes over the keys, softmax, p V, the sigmoid gate). The launcher validates its
// parameters on the host (validate_gated_attention; on failure cudaErrorInvalidValue and nothing
// is launched) and never allocates. Values only the device sees are guarded where a bad value
// would touch memory outside a tensor: a token of a sequence whose range (cu_seqlens), context
// length or blocks (block_tables entries outside [0, num_blocks), or more blocks than a table
// row holds) are invalid is skipped, its output row left unwritten. Blocks must not be shared by
// two sequences of a call (not checked on the device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace qwen35_trt::kernels {

// qg [T, nh * 2 * hd], k and v [T, nkv * hd] and out [T, nh * hd] with row strides in elements
// (k and v may be column slices of one projection); heads dense inside a row. q_norm_weight,
// k_norm_weight [hd]; kv_pool [num_blocks, 2, nkv, block_size, hd] dense, updated in place;
// block_tables [B, max_blocks_per_seq], cu_seqlens [B + 1], context_lens [B] int32.
// Requirements: nh % nkv == 0, nh <= 65535; hd % 32 == 0 and hd <= 256; rotary_dim even and <= hd;
// T < 2^31; strides % 8 == 0 and bf16 pointers 16-byte aligned (int32 ones 4-byte); out must not
// overlap the inputs.
struct GatedAttentionParams {
  const __nv_bfloat16* qg = nullptr;
  int64_t qg_stride = 0;
  const __nv_bfloat16* k = nullptr;
  int64_t k_stride = 0;
  const __nv_bfloat16* v = nullptr;
  int64_t v_stride = 0;
  const __nv_bfloat16* q_norm_weight = nullptr;
  const __nv_bfloat16* k_norm_weight = nullptr;
  __nv_bfloat16* kv_pool = nullptr;
  int64_t num_blocks = 0;
  int block_size = 0;
  const int32_t* block_tables = nullptr;
  int64_t max_blocks_per_seq = 0;
  const int32_t* cu_seqlens = nullptr;
  const int32_t* context_lens = nullptr;
  int64_t batch = 0;   // B >= 1
  int64_t tokens = 0;  // T >= B
  __nv_bfloat16* out = nullptr;
  int64_t out_stride = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int rotary_dim = 0;
  float rope_theta = 0.0f;
  float eps = 0.0f;
  float scale = 0.0f;
};

// Workspace of one call: the normalised, rotated queries [T, nh, hd] bf16, rounded up to 256 bytes.
std::size_t gated_attention_workspace_bytes(int64_t tokens, int num_heads, int head_dim);

// "" when the parameters are valid, else a message naming the field.
std::string validate_gated_attention(const GatedAttentionParams& p, std::size_t workspace_bytes);

// Enqueues prepare then attend on `stream`. `workspace`: at least
// gated_attention_workspace_bytes(T, nh, hd) bytes, 16-byte aligned (cudaErrorInvalidValue otherwise).
cudaError_t gated_attention(const GatedAttentionParams& p, void* workspace, std::size_t workspace_bytes,
                            cudaStream_t stream);

}  // namespace qwen35_trt::kernels
