// The Nvfp4MoE plugin's contract in plain C++ (see nvfp4_moe_rules.h).
#include "nvfp4_moe_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kTopK = "top_k";
const char* const kScaleLayout = "scale_layout";
const char* const kActivation = "activation";

std::string dims_str(const std::vector<int64_t>& d) {
  if (d.empty()) return "[] (a scalar)";
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

bool conflict(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; }

// The first known value of `candidates` (-1 when none is known).
int64_t first_known(std::initializer_list<int64_t> candidates) {
  for (int64_t v : candidates) {
    if (v >= 0) return v;
  }
  return -1;
}

int64_t twice(int64_t v) { return v < 0 ? -1 : 2 * v; }
int64_t half(int64_t v) { return v < 0 ? -1 : v / 2; }

}  // namespace

int32_t nvfp4_moe_inputs(const Nvfp4MoeFields& fields) {
  return fields.activation == Nvfp4Activation::kW4A4 ? 10 : 8;
}

ElementType nvfp4_moe_dtype(int32_t pos, const Nvfp4MoeFields& fields) {
  if (pos == nvfp4_moe_inputs(fields)) return ElementType::kBF16;  // out
  switch (pos) {
    case kMoeGateUpWeight:
    case kMoeGateUpScale:
    case kMoeDownWeight:
    case kMoeDownScale: return ElementType::kInt8;
    case kMoeRouterLogits:
    case kMoeGateUpScale2:
    case kMoeDownScale2:
    case kMoeGateUpInputScale:
    case kMoeDownInputScale: return ElementType::kFloat32;
    default: return ElementType::kBF16;
  }
}

bool nvfp4_moe_accepts(int32_t pos, ElementType type, const Nvfp4MoeFields& fields) {
  // The router is a bf16 linear in front of the op: its logits may come as they are, or widened.
  if (pos == kMoeRouterLogits) return type == ElementType::kFloat32 || type == ElementType::kBF16;
  return type == nvfp4_moe_dtype(pos, fields);
}

const char* nvfp4_moe_tensor_name(int32_t pos, const Nvfp4MoeFields& fields) {
  static const char* const names[] = {"hidden",      "router_logits",     "gate_up_weight",      "gate_up_weight_scale",
                                      "gate_up_weight_scale_2", "down_weight", "down_weight_scale",
                                      "down_weight_scale_2",    "gate_up_input_scale", "down_input_scale"};
  if (pos == nvfp4_moe_inputs(fields)) return "out";
  return pos >= 0 && pos < nvfp4_moe_inputs(fields) ? names[pos] : "?";
}

std::vector<FieldValue> nvfp4_moe_field_schema() {
  FieldValue top_k;
  top_k.name = kTopK;
  top_k.type = FieldType::kInt32;
  top_k.length = 1;
  FieldValue layout;
  layout.name = kScaleLayout;
  layout.type = FieldType::kChar;
  FieldValue activation;
  activation.name = kActivation;
  activation.type = FieldType::kChar;
  return {top_k, layout, activation};
}

std::string parse_nvfp4_moe_fields(const std::vector<FieldView>& fields, Nvfp4MoeFields* out) {
  std::string e = check_known_fields(fields, {kTopK, kScaleLayout, kActivation});
  if (!e.empty()) return e;
  Nvfp4MoeFields parsed;
  const FieldView* top_k = find_field(fields, kTopK, &e);
  if (!e.empty()) return e;
  if (top_k == nullptr) {
    return "field 'top_k': missing (expected one integer (INT32) in [1, " + std::to_string(kMoeMaxTopK) + "])";
  }
  int64_t k = 0;
  e = read_int_field(*top_k, 1, kMoeMaxTopK, &k);
  if (!e.empty()) return e;
  parsed.top_k = static_cast<int32_t>(k);
  // scale_layout and activation: the same fields, checks and messages as Qwen35Nvfp4Linear's.
  std::vector<FieldView> rest;
  for (const FieldView& f : fields) {
    if (f.name != nullptr && std::string(f.name) != kTopK) rest.push_back(f);
  }
  Nvfp4LinearFields linear;
  e = parse_nvfp4_linear_fields(rest, &linear);
  if (!e.empty()) return e;
  parsed.scale_layout = linear.scale_layout;
  parsed.activation = linear.activation;
  *out = parsed;
  return "";
}

std::vector<FieldValue> serialize_nvfp4_moe_fields(const Nvfp4MoeFields& fields) {
  return {FieldValue::int32(kTopK, fields.top_k),
          FieldValue::string(kScaleLayout, nvfp4_scale_layout_name(fields.scale_layout)),
          FieldValue::string(kActivation, nvfp4_activation_name(fields.activation))};
}

std::string check_nvfp4_moe_shapes(const std::vector<std::vector<int64_t>>& in, const Nvfp4MoeFields& f) {
  const int32_t count = nvfp4_moe_inputs(f);
  if (static_cast<int32_t>(in.size()) != count) {
    return std::string("inputs: expected ") +
           (count == 10 ? "10 (hidden, router_logits, gate_up_weight, gate_up_weight_scale, gate_up_weight_scale_2, "
                          "down_weight, down_weight_scale, down_weight_scale_2, gate_up_input_scale, "
                          "down_input_scale; activation \"w4a4\")"
                        : "8 (hidden, router_logits, gate_up_weight, gate_up_weight_scale, gate_up_weight_scale_2, "
                          "down_weight, down_weight_scale, down_weight_scale_2; activation \"w4a16\")") +
           ", got " + std::to_string(in.size());
  }
  static const size_t ranks[] = {2, 2, 3, 3, 2, 3, 3, 1, 1, 1};
  for (int32_t i = 0; i < count; ++i) {
    if (in[i].size() != ranks[i]) {
      return std::string(nvfp4_moe_tensor_name(i, f)) + ": expected rank " + std::to_string(ranks[i]) + ", got " +
             dims_str(in[i]);
    }
  }
  const auto& x = in[kMoeHidden];
  const auto& logits = in[kMoeRouterLogits];
  const auto& gu = in[kMoeGateUpWeight];
  const auto& dn = in[kMoeDownWeight];
  const int64_t H = first_known({x[1], twice(gu[2]), dn[1]});
  const int64_t I = first_known({half(gu[1]), twice(dn[2])});
  const int64_t E = first_known({gu[0], dn[0], logits[1]});
  if (H >= 0 && (H < 16 || H % 16 != 0)) {
    return "hidden: H (dim 1) must be a positive multiple of 16, got " + dims_str(x);
  }
  if (gu[1] >= 0 && gu[1] % 2 != 0) return "gate_up_weight: dim 1 must be 2I (even), got " + dims_str(gu);
  if (I >= 0 && (I < 16 || I % 16 != 0)) {
    return "gate_up_weight / down_weight: I must be a positive multiple of 16, got gate_up_weight " + dims_str(gu) +
           ", down_weight " + dims_str(dn);
  }
  if (E == 0 || E > kMoeMaxExperts) {
    return "gate_up_weight: E (dim 0) must be in [1, " + std::to_string(kMoeMaxExperts) + "], got " + dims_str(gu);
  }
  if (E >= 0 && f.top_k > E) {
    return "field 'top_k' = " + std::to_string(f.top_k) + " exceeds the number of experts E = " + std::to_string(E);
  }
  if (conflict(logits[0], x[0])) {
    return "router_logits: dim 0 must be T (hidden is " + dims_str(x) + "), got " + dims_str(logits);
  }
  if (conflict(logits[1], E) || conflict(gu[0], E) || conflict(dn[0], E)) {
    return "router_logits / gate_up_weight / down_weight: the number of experts differs: router_logits " +
           dims_str(logits) + ", gate_up_weight " + dims_str(gu) + ", down_weight " + dims_str(dn);
  }
  if (conflict(twice(gu[2]), H)) {
    return "gate_up_weight: dim 2 must be H/2 = " + std::to_string(H / 2) + ", got " + dims_str(gu);
  }
  if (conflict(dn[1], H)) return "down_weight: dim 1 must be H = " + std::to_string(H) + ", got " + dims_str(dn);
  if (conflict(twice(dn[2]), I)) {
    return "down_weight: dim 2 must be I/2 = " + std::to_string(I / 2) + " (gate_up_weight is " + dims_str(gu) +
           "), got " + dims_str(dn);
  }
  // Scales: per expert the matrix's scale dims in the layout (the fused gate_up as one [2I, H]).
  struct Scale {
    int32_t pos;
    int64_t rows, cols;
  };
  for (const Scale& s : {Scale{kMoeGateUpScale, twice(I), H}, Scale{kMoeDownScale, H, I}}) {
    const std::vector<int64_t> m = nvfp4_scale_dims(f.scale_layout, s.rows, s.cols);
    const auto& d = in[s.pos];
    if (conflict(d[0], E) || conflict(d[1], m[0]) || conflict(d[2], m[1])) {
      return std::string(nvfp4_moe_tensor_name(s.pos, f)) + ": expected [" + std::to_string(E) + ", " +
             std::to_string(m[0]) + ", " + std::to_string(m[1]) + "] for scale_layout \"" +
             nvfp4_scale_layout_name(f.scale_layout) + "\", got " + dims_str(d);
    }
  }
  if (conflict(in[kMoeGateUpScale2][0], E) || conflict(in[kMoeGateUpScale2][1], 2)) {
    return "gate_up_weight_scale_2: expected [E, 2] = [" + std::to_string(E) + ", 2] (gate, up), got " +
           dims_str(in[kMoeGateUpScale2]);
  }
  for (int32_t pos = kMoeDownScale2; pos < count; ++pos) {
    if (conflict(in[pos][0], E)) {
      return std::string(nvfp4_moe_tensor_name(pos, f)) + ": expected [E] = [" + std::to_string(E) + "], got " +
             dims_str(in[pos]);
    }
  }
  return "";
}

}  // namespace qwen35_trt::plugins
