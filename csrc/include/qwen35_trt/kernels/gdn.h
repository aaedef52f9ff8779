// Gated DeltaNet CUDA kernels: CausalConv1d (varlen prefill and decode), GatedDeltaNet chunked
// prefill (chunk 64, WY/UT form, tensor cores) and recurrent decode. The contracts are those of
// docs/ops.md and of the CPU reference (qwen35_trt/gdn.h); these are their bf16 device forms.
//
// Every launcher validates its parameters on the host (see the validate_* functions; on failure
// it returns cudaErrorInvalidValue and launches nothing), never allocates, and enqueues its
// kernels on `stream`. All pointers are device pointers. Values that only the device sees
// (cu_seqlens, slots) are checked again on the device where an invalid value could make a kernel
// touch memory outside its tensors: the chunked prefill records the problem in its workspace
// error word (see gdn_prefill_error_message) and writes nothing; the conv and recurrent kernels
// skip such sequences. Slot ids must be distinct within a call (not checked on the device).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace qwen35_trt::kernels {

// The sequences of one call.
struct GdnSequences {
  const int32_t* slots = nullptr;              // [B] slot of each sequence, in [0, num_slots)
  const int32_t* cu_seqlens = nullptr;         // [B + 1] prefill offsets; nullptr = decode (token i is sequence i)
  const uint8_t* has_initial_state = nullptr;  // [B] (nonzero: read the slot); nullptr = every sequence reads it
  int64_t batch = 0;                           // B >= 1 (<= 65535)
  int64_t tokens = 0;                          // T (decode: T == B)
  int64_t num_slots = 0;
  // Upper bound of the sequence lengths, or 0 when unknown. Only sizes the grid: any value gives
  // correct results, a tight one avoids idle blocks.
  int64_t max_seqlen = 0;
};

// CausalConv1d, bf16: y[t, c] = silu(bf16(sum_w weight[c, w] * h[t - W + 1 + w, c])) (fp32 sum),
// h = the slot's W-1 stored inputs then the sequence's rows of x; the slot ends holding the last
// W-1 inputs. x [T, C] and y [T, C] with row strides; weight [C, W] and state_pool
// [num_slots, C, W - 1] dense. Requirements: C % 8 == 0; 2 <= W <= 8; strides % 8 == 0 and
// pointers 16-byte aligned. y must not overlap x or the pool.
struct CausalConv1dParams {
  const __nv_bfloat16* x = nullptr;
  int64_t x_stride = 0;
  const __nv_bfloat16* weight = nullptr;
  __nv_bfloat16* state_pool = nullptr;
  __nv_bfloat16* y = nullptr;
  int64_t y_stride = 0;
  int64_t channels = 0;
  int width = 0;
  GdnSequences seqs;
};

// GatedDeltaNet, bf16 activations, fp32 state. Per token t and value head h (key head
// h / (Hv / Hk)): g = -exp(A_log[h]) * softplus(a + dt_bias[h]); beta = bf16(sigmoid(b));
// q, k L2-normalised (when use_qk_l2norm), q *= scale; S = exp(g) S; u = beta (v - S^T k);
// S += k u^T; o = S^T q.
// q, k [T, Hk, dk]; v, o [T, Hv, dv]; a, b [T, Hv]: each with a token (row) stride in elements,
// heads and head dims dense inside a row (so q, k, v can be column slices of the conv output).
// A_log, dt_bias fp32 [Hv]; state_pool fp32 [num_slots, Hv, dk, dv] dense, updated in place.
// Requirements: Hv % Hk == 0; dv % 32 == 0; dk in {64, 128} for the chunked prefill and in
// {32, 64, 128, 256} for the recurrent kernel; q, k, v, o strides % 8 == 0 and pointers 16-byte
// aligned; o must not overlap the inputs.
struct GatedDeltaNetParams {
  const __nv_bfloat16* q = nullptr;
  int64_t q_stride = 0;
  const __nv_bfloat16* k = nullptr;
  int64_t k_stride = 0;
  const __nv_bfloat16* v = nullptr;
  int64_t v_stride = 0;
  const __nv_bfloat16* a = nullptr;
  int64_t a_stride = 0;
  const __nv_bfloat16* b = nullptr;
  int64_t b_stride = 0;
  const float* A_log = nullptr;
  const float* dt_bias = nullptr;
  float* state_pool = nullptr;
  __nv_bfloat16* o = nullptr;
  int64_t o_stride = 0;
  int num_k_heads = 0;
  int num_v_heads = 0;
  int head_k_dim = 0;
  int head_v_dim = 0;
  float scale = 0.0f;
  bool use_qk_l2norm = true;
  GdnSequences seqs;
};

// Host-side checks: an empty string when the parameters are valid, else a message that names the
// field ("x_stride: must be a multiple of 8, got 12").
std::string validate_causal_conv1d(const CausalConv1dParams& p);
std::string validate_gdn_recurrent(const GatedDeltaNetParams& p);
std::string validate_gdn_chunk_prefill(const GatedDeltaNetParams& p, std::size_t workspace_bytes);

// CausalConv1d for prefill (cu_seqlens given) or decode (cu_seqlens == nullptr).
cudaError_t causal_conv1d(const CausalConv1dParams& p, cudaStream_t stream);

// Token-by-token GatedDeltaNet; the decode kernel (one token per sequence: memory-bound, reads
// and writes each state once), also correct for any cu_seqlens (the state stays on chip).
cudaError_t gdn_recurrent(const GatedDeltaNetParams& p, cudaStream_t stream);

// Chunked prefill (varlen). Workspace: gdn_chunk_prefill_workspace_bytes(B, T, Hv, dk, dv) bytes,
// 256-byte aligned, contents undefined on entry (about 88 KiB per 64-token chunk and value head at
// dk = dv = 128). Four kernels: a plan (chunk offsets and device-side checks of cu_seqlens and
// slots), the per-chunk WY/UT transform, the sequential pass over the chunks (state in registers;
// the final state, each chunk's starting state and the corrected values), and the per-chunk outputs.
std::size_t gdn_chunk_prefill_workspace_bytes(int64_t batch, int64_t tokens, int num_v_heads, int head_k_dim,
                                              int head_v_dim);
// Dynamic shared memory one block of the chunked prefill needs (the largest of its kernels: 93 KiB
// at dk = 128), 0 for an unsupported head_k_dim. A device whose per-block opt-in limit is smaller
// cannot run it: gdn_chunk_prefill then returns cudaErrorNotSupported and callers use
// gdn_recurrent, which computes the same function.
std::size_t gdn_chunk_prefill_shared_bytes(int head_k_dim);
cudaError_t gdn_chunk_prefill(const GatedDeltaNetParams& p, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream);

// After gdn_chunk_prefill has run (stream synchronized), the device-side check result stored in
// its workspace: 0 when the inputs were valid, else a bit set of kGdnError* values.
inline constexpr int32_t kGdnErrorCuSeqlens = 1;  // cu_seqlens not 0 = c0 < c1 < ... < cB = T
inline constexpr int32_t kGdnErrorSlot = 2;       // a slot id outside [0, num_slots)
cudaError_t gdn_prefill_read_error(const void* workspace, int32_t* error, cudaStream_t stream);
std::string gdn_prefill_error_message(int32_t error);

}  // namespace qwen35_trt::kernels
