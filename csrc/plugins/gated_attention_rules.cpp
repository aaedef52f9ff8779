// The GatedAttention plugin's contract in plain C++ (see gated_attention_rules.h).
#include "gated_attention_rules.h"

#include <cmath>
#include <initializer_list>
#include <limits>

#include "shape_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kNumHeads = "num_heads";
const char* const kNumKvHeads = "num_kv_heads";
const char* const kHeadDim = "head_dim";
const char* const kRotaryDim = "rotary_dim";
const char* const kRopeTheta = "rope_theta";
const char* const kEps = "eps";
const char* const kScale = "scale";

// The float fields have no meaningful upper bound: any finite value is the contract's.
constexpr double kUnbounded = std::numeric_limits<double>::infinity();

FieldValue schema_entry(const char* name, FieldType type) {
  FieldValue f;
  f.name = name;
  f.type = type;
  f.length = 1;
  return f;
}

// A required integer field in [lo, hi]; "" and *out set, or a message naming the field.
std::string read_required_int(const std::vector<FieldView>& fields, const char* name, int64_t lo, int64_t hi,
                              int32_t* out) {
  std::string e;
  const FieldView* f = find_field(fields, name, &e);
  if (!e.empty()) return e;
  if (f == nullptr) {
    return "field '" + std::string(name) + "': missing (expected one integer (INT32) in [" + std::to_string(lo) +
           ", " + std::to_string(hi) + "])";
  }
  int64_t v = 0;
  e = read_int_field(*f, lo, hi, &v);
  if (!e.empty()) return e;
  *out = static_cast<int32_t>(v);
  return "";
}

// A float field; `required` says whether absence is an error (else *out is left as it is).
std::string read_float(const std::vector<FieldView>& fields, const char* name, bool required, LowerBound lower,
                       float* out) {
  std::string e;
  const FieldView* f = find_field(fields, name, &e);
  if (!e.empty()) return e;
  if (f == nullptr) {
    if (!required) return "";
    return "field '" + std::string(name) + "': missing (expected one finite float (FLOAT32) in " +
           (lower == LowerBound::kClosed ? "[0, inf))" : "(0, inf))");
  }
  return read_float_field(*f, 0.0, kUnbounded, out, lower);
}

}  // namespace

ElementType gated_attention_dtype(int32_t pos) {
  switch (pos) {
    case kAttnBlockTables:
    case kAttnCuSeqlens:
    case kAttnContextLens: return ElementType::kInt32;
    default: return ElementType::kBF16;
  }
}

const char* gated_attention_tensor_name(int32_t pos) {
  static const char* const names[] = {"qg",           "k",          "v",          "q_norm_weight",
                                      "k_norm_weight", "kv_pool",   "block_tables", "cu_seqlens",
                                      "context_lens",  "out",       "kv_pool (output)"};
  return pos >= 0 && pos < kGatedAttentionInputs + kGatedAttentionOutputs ? names[pos] : "?";
}

int32_t gated_attention_aliased_input(int32_t output) { return output == 1 ? kAttnKvPool : -1; }

float gated_attention_default_scale(int32_t head_dim) {
  return head_dim > 0 ? static_cast<float>(std::pow(static_cast<double>(head_dim), -0.5)) : 0.0f;
}

std::vector<FieldValue> gated_attention_field_schema() {
  return {schema_entry(kNumHeads, FieldType::kInt32),    schema_entry(kNumKvHeads, FieldType::kInt32),
          schema_entry(kHeadDim, FieldType::kInt32),     schema_entry(kRotaryDim, FieldType::kInt32),
          schema_entry(kRopeTheta, FieldType::kFloat32), schema_entry(kEps, FieldType::kFloat32),
          schema_entry(kScale, FieldType::kFloat32)};
}

std::string parse_gated_attention_fields(const std::vector<FieldView>& fields, GatedAttentionFields* out) {
  std::string e = check_known_fields(fields, {kNumHeads, kNumKvHeads, kHeadDim, kRotaryDim, kRopeTheta, kEps, kScale});
  if (!e.empty()) return e;
  GatedAttentionFields p;
  e = read_required_int(fields, kNumHeads, 1, kAttnMaxHeads, &p.num_heads);
  if (!e.empty()) return e;
  e = read_required_int(fields, kNumKvHeads, 1, p.num_heads, &p.num_kv_heads);
  if (!e.empty()) return e;
  if (p.num_heads % p.num_kv_heads != 0) {
    return "field 'num_kv_heads': must divide num_heads = " + std::to_string(p.num_heads) + ", got " +
           std::to_string(p.num_kv_heads);
  }
  e = read_required_int(fields, kHeadDim, kAttnMinHeadDim, kAttnMaxHeadDim, &p.head_dim);
  if (!e.empty()) return e;
  if (p.head_dim % 32 != 0) {
    return "field 'head_dim': expected a multiple of 32 in [32, 256] (one warp lane holds head_dim / 32 dims), "
           "got " +
           std::to_string(p.head_dim);
  }
  e = read_required_int(fields, kRotaryDim, 0, p.head_dim, &p.rotary_dim);
  if (!e.empty()) return e;
  if (p.rotary_dim % 2 != 0) {
    return "field 'rotary_dim': expected an even integer in [0, head_dim = " + std::to_string(p.head_dim) +
           "] (RoPE turns pairs of dims), got " + std::to_string(p.rotary_dim);
  }
  e = read_float(fields, kRopeTheta, true, LowerBound::kOpen, &p.rope_theta);
  if (!e.empty()) return e;
  e = read_float(fields, kEps, true, LowerBound::kClosed, &p.eps);
  if (!e.empty()) return e;
  p.scale = gated_attention_default_scale(p.head_dim);
  e = read_float(fields, kScale, false, LowerBound::kOpen, &p.scale);
  if (!e.empty()) return e;
  *out = p;
  return "";
}

std::vector<FieldValue> serialize_gated_attention_fields(const GatedAttentionFields& f) {
  return {FieldValue::int32(kNumHeads, f.num_heads),    FieldValue::int32(kNumKvHeads, f.num_kv_heads),
          FieldValue::int32(kHeadDim, f.head_dim),      FieldValue::int32(kRotaryDim, f.rotary_dim),
          FieldValue::float32(kRopeTheta, f.rope_theta), FieldValue::float32(kEps, f.eps),
          FieldValue::float32(kScale, f.scale)};
}

int64_t gated_attention_out_width(const GatedAttentionFields& f) {
  return static_cast<int64_t>(f.num_heads) * f.head_dim;
}

std::string check_gated_attention_shapes(const std::vector<std::vector<int64_t>>& in, const GatedAttentionFields& f) {
  if (static_cast<int32_t>(in.size()) != kGatedAttentionInputs) {
    return "inputs: expected 9 (qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, cu_seqlens, "
           "context_lens), got " +
           std::to_string(in.size());
  }
  static const size_t ranks[] = {2, 2, 2, 1, 1, 5, 2, 1, 1};
  for (int32_t i = 0; i < kGatedAttentionInputs; ++i) {
    if (in[i].size() != ranks[i]) {
      return std::string(gated_attention_tensor_name(i)) + ": expected rank " + std::to_string(ranks[i]) + ", got " +
             dims_str(in[i]);
    }
  }
  const int64_t nh = f.num_heads, nkv = f.num_kv_heads, hd = f.head_dim;
  const auto& qg = in[kAttnQg];
  const auto& pool = in[kAttnKvPool];
  const auto& tables = in[kAttnBlockTables];
  const auto& cu = in[kAttnCuSeqlens];
  const auto& context = in[kAttnContextLens];

  const int64_t tokens = first_known({qg[0], in[kAttnK][0], in[kAttnV][0]});
  for (int32_t i : {kAttnK, kAttnV}) {
    if (conflict(in[i][0], tokens)) {
      return std::string(gated_attention_tensor_name(i)) + ": dim 0 (tokens) must equal qg's " +
             std::to_string(tokens) + ", got " + dims_str(in[i]);
    }
  }
  if (conflict(qg[1], nh * 2 * hd)) {
    return "qg: dim 1 must be num_heads * 2 * head_dim = " + std::to_string(nh * 2 * hd) +
           " (query and gate of each head), got " + dims_str(qg);
  }
  for (int32_t i : {kAttnK, kAttnV}) {
    if (conflict(in[i][1], nkv * hd)) {
      return std::string(gated_attention_tensor_name(i)) + ": dim 1 must be num_kv_heads * head_dim = " +
             std::to_string(nkv * hd) + ", got " + dims_str(in[i]);
    }
  }
  for (int32_t i : {kAttnQNormWeight, kAttnKNormWeight}) {
    if (conflict(in[i][0], hd)) {
      return std::string(gated_attention_tensor_name(i)) + ": must have head_dim = " + std::to_string(hd) +
             " entries, got " + dims_str(in[i]);
    }
  }
  if (conflict(pool[1], 2) || conflict(pool[2], nkv) || conflict(pool[4], hd)) {
    return "kv_pool: must be [num_blocks, 2, num_kv_heads, block_size, head_dim] = [num_blocks, 2, " +
           std::to_string(nkv) + ", block_size, " + std::to_string(hd) + "], got " + dims_str(pool);
  }
  if (pool[0] == 0) return "kv_pool: num_blocks (dim 0) must be at least 1, got " + dims_str(pool);
  if (pool[3] == 0) return "kv_pool: block_size (dim 3) must be at least 1, got " + dims_str(pool);
  if (tables[1] == 0) {
    return "block_tables: max_blocks_per_seq (dim 1) must be at least 1 (every sequence writes a block), got " +
           dims_str(tables);
  }
  if (conflict(context[0], tables[0])) {
    return "context_lens: must have one entry per sequence (block_tables has B = " + std::to_string(tables[0]) +
           " rows), got " + dims_str(context);
  }
  const int64_t rows = first_known({tables[0], context[0]});
  if (rows >= 0 && conflict(cu[0], rows + 1)) {
    return "cu_seqlens: must have B + 1 = " + std::to_string(rows + 1) + " entries, got " + dims_str(cu);
  }
  const int64_t batch = rows >= 0 ? rows : cu[0] >= 0 ? (cu[0] > 0 ? cu[0] - 1 : 0) : -1;
  if (batch == 0) {
    return "block_tables: B (dim 0) must be at least 1, got block_tables " + dims_str(tables) + ", cu_seqlens " +
           dims_str(cu);
  }
  if (batch >= 0 && tokens >= 0 && tokens < batch) {
    return "qg: T (dim 0) must be >= B (every sequence has a new token), got T = " + std::to_string(tokens) +
           ", B = " + std::to_string(batch);
  }
  return "";
}

}  // namespace qwen35_trt::plugins
