// The GatedDeltaNet plugin's contract in plain C++ (docs/ops.md "GatedDeltaNet", docs/plugins.md):
// name, fields, tensor positions, dtypes, shape rules, aliasing, workspace, the choice between the
// chunked prefill and the recurrent kernel, and serialisation. The TensorRT adapter
// (gdn_plugin.cpp) only translates to and from these; ctest covers them without TensorRT
// (csrc/tests/test_plugin_rules.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "field_rules.h"
#include "plugin_types.h"
#include "workspace_rules.h"

namespace qwen35_trt::plugins {

// The ONNX op_type (prefixed for the same reason as Qwen35CausalConv1d).
inline constexpr const char* kGatedDeltaNetName = "Qwen35GatedDeltaNet";

// Tensor positions (inputs, then outputs, as supportsFormatCombination numbers them).
enum GatedDeltaNetPos : int32_t {
  kGdnQ = 0,                // [T, Hk, dk] bf16
  kGdnK = 1,                // [T, Hk, dk] bf16
  kGdnV = 2,                // [T, Hv, dv] bf16
  kGdnA = 3,                // [T, Hv] bf16
  kGdnB = 4,                // [T, Hv] bf16
  kGdnALog = 5,             // [Hv] fp32
  kGdnDtBias = 6,           // [Hv] fp32
  kGdnStatePool = 7,        // [num_slots, Hv, dk, dv] fp32, updated in place
  kGdnSlots = 8,            // [B] int32
  kGdnCuSeqlens = 9,        // [B + 1] int32
  kGdnHasInitialState = 10,  // [B] bool
  kGdnO = 11,               // output 0: [T, Hv, dv] bf16
  kGdnStatePoolOut = 12,    // output 1: the pool, aliasing input kGdnStatePool
};
inline constexpr int32_t kGatedDeltaNetInputs = 11;
inline constexpr int32_t kGatedDeltaNetOutputs = 2;

ElementType gated_delta_net_dtype(int32_t pos);
const char* gated_delta_net_tensor_name(int32_t pos);

// Output index -> the input whose dims it has (o has v's [T, Hv, dv]); output 1 IS input 7.
int32_t gated_delta_net_output_shape_source(int32_t output);
int32_t gated_delta_net_aliased_input(int32_t output);  // -1: not aliased

// Which kernel the plugin may run ("auto": see choose_gated_delta_net_form).
enum class GdnAlgorithm { kAuto, kChunked, kRecurrent };
const char* gdn_algorithm_name(GdnAlgorithm a);

// Fields (= ONNX node attributes):
//   scale          FLOAT, optional, finite and > 0; absent = dk^-0.5 (dk is only known from the
//                  shapes, so the default is resolved at enqueue and an absent scale stays absent
//                  through serialisation).
//   use_qk_l2norm  INT, optional, 0 or 1 (default 1: what the model does).
//   algorithm      STRING, optional, "auto" (default) | "chunked" | "recurrent".
struct GatedDeltaNetFields {
  bool has_scale = false;
  float scale = 0.0f;  // meaningful when has_scale
  int32_t use_qk_l2norm = 1;
  GdnAlgorithm algorithm = GdnAlgorithm::kAuto;
};

// The scale the kernels get: the field, or head_k_dim^-0.5.
float gated_delta_net_scale(const GatedDeltaNetFields& fields, int64_t head_k_dim);

std::vector<FieldValue> gated_delta_net_field_schema();
std::string parse_gated_delta_net_fields(const std::vector<FieldView>& fields, GatedDeltaNetFields* out);
// What getFieldsToSerialize returns (scale only when given); the parser reads it back unchanged.
std::vector<FieldValue> serialize_gated_delta_net_fields(const GatedDeltaNetFields& fields);

// Checks the input dims (one vector per input; -1 = not known yet) against each other and the
// fields; "" when consistent, else a message naming the tensor and dimension. Also enforces the
// kernels' shape limits: Hv % Hk == 0, dv % 32 == 0, dk in {32, 64, 128, 256} (recurrent) and
// {64, 128} when the field algorithm is "chunked".
std::string check_gated_delta_net_shapes(const std::vector<std::vector<int64_t>>& inputs,
                                         const GatedDeltaNetFields& fields);

// The kernel an enqueue runs.
enum class GdnForm { kRecurrent, kChunked };

// The rule, from the field, the shapes and the device only (has_initial_state and cu_seqlens are
// device memory, unreadable in enqueue without a synchronisation):
//   "recurrent" -> recurrent.
//   "chunked"   -> chunked; an error where the device's per-block shared memory
//                  (`device_shared_optin`) is below what the chunked prefill needs
//                  (`chunked_shared_bytes`, 0 = dk unsupported).
//   "auto"      -> recurrent when tokens == batch (every sequence has exactly one token, as
//                  cu_seqlens is strictly increasing: a decode step, memory-bound, where the
//                  recurrent kernel reads and writes each state once); else chunked when dk is 64
//                  or 128 and the device fits it; else recurrent (the same function, slower:
//                  sm_120 at dk = 128).
// Returns "" and sets *form, or a message naming the field.
std::string choose_gated_delta_net_form(const GatedDeltaNetFields& fields, int64_t tokens, int64_t batch,
                                        int64_t head_k_dim, std::size_t chunked_shared_bytes,
                                        int64_t device_shared_optin, GdnForm* form);

// Whether any enqueue of these fields and dk (-1: unknown) may run the chunked prefill, which is
// the only kernel that needs a workspace.
bool gated_delta_net_may_run_chunked(const GatedDeltaNetFields& fields, int64_t head_k_dim);

// The chunked prefill wants its workspace 256-byte aligned; TensorRT promises less, so the
// plugin asks for that much more and aligns the pointer itself.
inline constexpr std::size_t kGdnWorkspaceAlignment = kWorkspaceAlignment;  // workspace_rules.h
// getWorkspaceSize's answer given the kernel's need for the largest (B, T, Hv) of the profile
// (0 when no chunked prefill can run).
std::size_t gated_delta_net_workspace_bytes(bool may_run_chunked, std::size_t chunked_bytes);
// The aligned start of a workspace obtained with gated_delta_net_workspace_bytes: from there, at
// least the chunked prefill's bytes for the profile's largest shapes, so for any runtime shapes
// (the kernel's need grows with B and T).
void* gated_delta_net_aligned_workspace(void* workspace);

}  // namespace qwen35_trt::plugins
