// The GatedAttention plugin's contract in plain C++ (docs/ops.md "GatedAttention", docs/plugins.md):
// name, fields, tensor positions, dtypes, shape rules, aliasing and serialisation. The TensorRT
// adapter (gated_attention_plugin.cpp) only translates to and from these; ctest covers them
// without TensorRT (csrc/tests/test_plugin_rules.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "field_rules.h"
#include "plugin_types.h"

namespace qwen35_trt::plugins {

// The ONNX op_type (prefixed: TensorRT's ONNX parser has a built-in `Attention` importer).
inline constexpr const char* kGatedAttentionName = "Qwen35GatedAttention";

// Tensor positions (inputs, then outputs, as supportsFormatCombination numbers them).
enum GatedAttentionPos : int32_t {
  kAttnQg = 0,            // [T, nh * 2 * hd] bf16: q_proj output, per head [query | gate]
  kAttnK = 1,             // [T, nkv * hd] bf16
  kAttnV = 2,             // [T, nkv * hd] bf16
  kAttnQNormWeight = 3,   // [hd] bf16
  kAttnKNormWeight = 4,   // [hd] bf16
  kAttnKvPool = 5,        // [num_blocks, 2, nkv, block_size, hd] bf16, updated in place
  kAttnBlockTables = 6,   // [B, max_blocks_per_seq] int32
  kAttnCuSeqlens = 7,     // [B + 1] int32
  kAttnContextLens = 8,   // [B] int32
  kAttnOut = 9,           // output 0: [T, nh * hd] bf16
  kAttnKvPoolOut = 10,    // output 1: the pool, aliasing input kAttnKvPool
};
inline constexpr int32_t kGatedAttentionInputs = 9;
inline constexpr int32_t kGatedAttentionOutputs = 2;

// The one dtype each position accepts (only linear, dense formats are accepted).
ElementType gated_attention_dtype(int32_t pos);
const char* gated_attention_tensor_name(int32_t pos);

// Output 1 IS input 5 (and has its dims); output 0's shape: gated_attention_out_width.
int32_t gated_attention_aliased_input(int32_t output);  // -1: not aliased

// Fields (= ONNX node attributes):
//   num_heads     INT, required, in [1, kAttnMaxHeads]: nh, query heads.
//   num_kv_heads  INT, required, in [1, num_heads] and dividing it: nkv, key/value heads (GQA).
//   head_dim      INT, required, a multiple of 32 in [32, 256]: hd (one warp lane holds hd / 32 dims).
//   rotary_dim    INT, required, even, in [0, head_dim]: RoPE on the first rotary_dim dims of a head.
//   rope_theta    FLOAT, required, finite and > 0.
//   eps           FLOAT, required, finite and >= 0: the q/k RMSNorm epsilon.
//   scale         FLOAT, optional, finite and > 0; absent = head_dim ** -0.5. Unlike GatedDeltaNet's
//                 scale the default depends on a field only, so it is resolved when the fields are
//                 parsed and always serialised explicitly.
struct GatedAttentionFields {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t rotary_dim = 0;
  float rope_theta = 0.0f;
  float eps = 0.0f;
  float scale = 0.0f;
};
inline constexpr int32_t kAttnMaxHeads = 65535;
inline constexpr int32_t kAttnMinHeadDim = 32;
inline constexpr int32_t kAttnMaxHeadDim = 256;

// head_dim ** -0.5 as Python computes it (a double power) rounded to fp32: the model's scaling.
float gated_attention_default_scale(int32_t head_dim);

// The schema getFieldNames lists (names and types, no values).
std::vector<FieldValue> gated_attention_field_schema();

// Parses and checks the fields; "" on success, else a message naming the field.
std::string parse_gated_attention_fields(const std::vector<FieldView>& fields, GatedAttentionFields* out);

// What getFieldsToSerialize returns (every field, scale included); the parser reads it back unchanged.
std::vector<FieldValue> serialize_gated_attention_fields(const GatedAttentionFields& fields);

// Output 0 is [T, nh * hd]: qg's dim 0 (usually dynamic) and this constant from the fields.
int64_t gated_attention_out_width(const GatedAttentionFields& fields);

// Checks the input dims (one vector per input; -1 = not known yet, as at build time) against each
// other and the fields; "" when consistent, else a message naming the tensor and dimension.
std::string check_gated_attention_shapes(const std::vector<std::vector<int64_t>>& inputs,
                                         const GatedAttentionFields& fields);

}  // namespace qwen35_trt::plugins
