// The Nvfp4MoE plugin's contract in plain C++ (docs/ops.md "Nvfp4MoE", docs/plugins.md): name,
// fields, tensor positions, dtypes, shape rules, workspace and serialisation. The TensorRT adapter
// (nvfp4_moe_plugin.cpp) only translates to and from these; ctest covers them without TensorRT
// (csrc/tests/test_plugin_rules.cpp). With the field shared_expert = 1 the node also takes the
// shared expert (three NVFP4 linears and the sigmoid gate vector), fused into the combine with one
// bf16 rounding as ops.md "Nvfp4MoE" steps 3-4 say.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "field_rules.h"
#include "nvfp4_linear_rules.h"  // Nvfp4ScaleLayout, Nvfp4Activation, nvfp4_scale_dims
#include "plugin_types.h"

namespace qwen35_trt::plugins {

inline constexpr const char* kNvfp4MoeName = "Qwen35Nvfp4MoE";

// Tensor positions. The two input scales exist only with activation "w4a4" and the shared
// expert's inputs only with shared_expert = 1, so the positions after the routed weights depend on
// the fields: nvfp4_moe_routed_inputs, nvfp4_moe_shared_pos, and the output's position is the input
// count nvfp4_moe_inputs(fields) (8 or 10, plus 10 or 13 with the shared expert).
enum Nvfp4MoePos : int32_t {
  kMoeHidden = 0,           // [T, H] bf16
  kMoeRouterLogits = 1,     // [T, E] fp32 or bf16
  kMoeGateUpWeight = 2,     // [E, 2I, H/2] int8 bytes (gate rows [0, I), up rows [I, 2I))
  kMoeGateUpScale = 3,      // [E, ...] int8 scale bytes: per expert the fused [2I, H/16] in scale_layout
  kMoeGateUpScale2 = 4,     // [E, 2] fp32: (gate, up) globals
  kMoeDownWeight = 5,       // [E, H, I/2] int8 bytes
  kMoeDownScale = 6,        // [E, ...] int8 scale bytes: per expert [H, I/16] in scale_layout
  kMoeDownScale2 = 7,       // [E] fp32
  kMoeGateUpInputScale = 8,  // [E] fp32, w4a4 only
  kMoeDownInputScale = 9,    // [E] fp32, w4a4 only
};

// The shared expert's inputs follow the routed ones: for each linear (gate, up, down, in this
// order) its parts, the input scale only with "w4a4"; then shared_expert_gate_weight.
//   shared_<linear>_weight          int8 bytes: gate, up [Is, H/2]; down [H, Is/2]
//   shared_<linear>_weight_scale    int8 scale bytes: the [N, K] matrix's scale dims in scale_layout
//   shared_<linear>_weight_scale_2  fp32 [] or [1]
//   shared_<linear>_input_scale     fp32 [] or [1], w4a4 only
//   shared_expert_gate_weight       bf16 [H] or [1, H] (the checkpoint's shared_expert_gate.weight)
enum class MoeSharedLinear : int32_t { kGate = 0, kUp = 1, kDown = 2 };
enum class MoeSharedPart : int32_t { kWeight = 0, kWeightScale = 1, kWeightScale2 = 2, kInputScale = 3 };

inline constexpr int32_t kNvfp4MoeOutputs = 1;
inline constexpr int32_t kMoeMaxTopK = 32;  // moe::kMaxTopK: the launcher's limit
inline constexpr int64_t kMoeMaxExperts = 1024;  // kernels::kMaxExperts

// Fields (= ONNX node attributes):
//   top_k         INT, required, in [1, 32] (and <= E, checked with the shapes).
//   scale_layout  STRING, required, as Qwen35Nvfp4Linear's.
//   activation    STRING, optional (default "w4a16"), as Qwen35Nvfp4Linear's: "w4a4" adds the
//                 inputs gate_up_input_scale and down_input_scale (and the shared linears' input
//                 scales).
//   shared_expert INT, optional (default 0), 0 or 1: 1 adds the shared expert's inputs. Always
//                 serialised.
struct Nvfp4MoeFields {
  int32_t top_k = 0;
  Nvfp4ScaleLayout scale_layout = Nvfp4ScaleLayout::kRowMajor;
  Nvfp4Activation activation = Nvfp4Activation::kW4A16;
  bool shared_expert = false;
};

int32_t nvfp4_moe_routed_inputs(const Nvfp4MoeFields& fields);  // 8 (w4a16) or 10 (w4a4)
int32_t nvfp4_moe_inputs(const Nvfp4MoeFields& fields);  // routed, plus 10 (w4a16) or 13 (w4a4) shared
// The position of a shared-expert input (-1 without the shared expert, or for the input scale
// without "w4a4"), and of shared_expert_gate_weight (-1 without the shared expert).
int32_t nvfp4_moe_shared_pos(const Nvfp4MoeFields& fields, MoeSharedLinear linear, MoeSharedPart part);
int32_t nvfp4_moe_shared_gate_weight_pos(const Nvfp4MoeFields& fields);
// The dtype of each position (pos = the input count is the output). router_logits takes fp32 or
// bf16 (the launcher reads either): nvfp4_moe_accepts.
ElementType nvfp4_moe_dtype(int32_t pos, const Nvfp4MoeFields& fields);
bool nvfp4_moe_accepts(int32_t pos, ElementType type, const Nvfp4MoeFields& fields);
const char* nvfp4_moe_tensor_name(int32_t pos, const Nvfp4MoeFields& fields);
// "" when the node has the input and output counts the fields ask for, else a message listing the
// inputs expected.
std::string nvfp4_moe_counts_error(const Nvfp4MoeFields& fields, int32_t nbInputs, int32_t nbOutputs);

std::vector<FieldValue> nvfp4_moe_field_schema();
std::string parse_nvfp4_moe_fields(const std::vector<FieldView>& fields, Nvfp4MoeFields* out);
std::vector<FieldValue> serialize_nvfp4_moe_fields(const Nvfp4MoeFields& fields);

// Checks the input dims (-1 = not known yet) against each other and the fields; "" when
// consistent, else a message naming the tensor and dimension.
std::string check_nvfp4_moe_shapes(const std::vector<std::vector<int64_t>>& inputs, const Nvfp4MoeFields& fields);

}  // namespace qwen35_trt::plugins
