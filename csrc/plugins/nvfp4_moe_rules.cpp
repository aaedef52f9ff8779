// The Nvfp4MoE plugin's contract in plain C++ (see nvfp4_moe_rules.h).
#include "nvfp4_moe_rules.h"

#include "shape_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kTopK = "top_k";
const char* const kScaleLayout = "scale_layout";
const char* const kActivation = "activation";
const char* const kSharedExpert = "shared_expert";

int64_t twice(int64_t v) { return v < 0 ? -1 : 2 * v; }
int64_t half(int64_t v) { return v < 0 ? -1 : v / 2; }

// One input: its name (for messages) and the one dtype it takes (router_logits: bf16 too).
struct InputSpec {
  const char* name;
  ElementType type;
};

// The node's inputs in order, for these fields: the one list positions, names and dtypes come from.
std::vector<InputSpec> input_specs(const Nvfp4MoeFields& f) {
  const ElementType kI8 = ElementType::kInt8, kF32 = ElementType::kFloat32, kBF16 = ElementType::kBF16;
  const bool w4a4 = f.activation == Nvfp4Activation::kW4A4;
  std::vector<InputSpec> in = {{"hidden", kBF16},           {"router_logits", kF32},
                               {"gate_up_weight", kI8},     {"gate_up_weight_scale", kI8},
                               {"gate_up_weight_scale_2", kF32}, {"down_weight", kI8},
                               {"down_weight_scale", kI8},  {"down_weight_scale_2", kF32}};
  if (w4a4) {
    in.push_back({"gate_up_input_scale", kF32});
    in.push_back({"down_input_scale", kF32});
  }
  if (f.shared_expert) {
    static const char* const names[3][4] = {
        {"shared_gate_weight", "shared_gate_weight_scale", "shared_gate_weight_scale_2", "shared_gate_input_scale"},
        {"shared_up_weight", "shared_up_weight_scale", "shared_up_weight_scale_2", "shared_up_input_scale"},
        {"shared_down_weight", "shared_down_weight_scale", "shared_down_weight_scale_2", "shared_down_input_scale"}};
    for (const auto& linear : names) {
      in.push_back({linear[0], kI8});
      in.push_back({linear[1], kI8});
      in.push_back({linear[2], kF32});
      if (w4a4) in.push_back({linear[3], kF32});
    }
    in.push_back({"shared_expert_gate_weight", kBF16});
  }
  return in;
}

std::string activation_desc(const Nvfp4MoeFields& f) {
  return std::string("activation \"") + nvfp4_activation_name(f.activation) + "\", shared_expert " +
         (f.shared_expert ? "1" : "0");
}

// "(a, b, ...; activation "...", shared_expert k)": the inputs a node with these fields takes.
std::string input_list(const Nvfp4MoeFields& f) {
  const std::vector<InputSpec> in = input_specs(f);
  std::string s = "(";
  for (size_t i = 0; i < in.size(); ++i) s += (i ? ", " : "") + std::string(in[i].name);
  return s + "; " + activation_desc(f) + ")";
}

}  // namespace

int32_t nvfp4_moe_routed_inputs(const Nvfp4MoeFields& fields) {
  return fields.activation == Nvfp4Activation::kW4A4 ? 10 : 8;
}

int32_t nvfp4_moe_inputs(const Nvfp4MoeFields& fields) {
  const int32_t per_linear = fields.activation == Nvfp4Activation::kW4A4 ? 4 : 3;
  return nvfp4_moe_routed_inputs(fields) + (fields.shared_expert ? 3 * per_linear + 1 : 0);
}

int32_t nvfp4_moe_shared_pos(const Nvfp4MoeFields& fields, MoeSharedLinear linear, MoeSharedPart part) {
  const bool w4a4 = fields.activation == Nvfp4Activation::kW4A4;
  if (!fields.shared_expert || (part == MoeSharedPart::kInputScale && !w4a4)) return -1;
  const int32_t per_linear = w4a4 ? 4 : 3;
  return nvfp4_moe_routed_inputs(fields) + static_cast<int32_t>(linear) * per_linear + static_cast<int32_t>(part);
}

int32_t nvfp4_moe_shared_gate_weight_pos(const Nvfp4MoeFields& fields) {
  return fields.shared_expert ? nvfp4_moe_inputs(fields) - 1 : -1;
}

ElementType nvfp4_moe_dtype(int32_t pos, const Nvfp4MoeFields& fields) {
  const std::vector<InputSpec> in = input_specs(fields);
  if (pos >= 0 && pos < static_cast<int32_t>(in.size())) return in[pos].type;
  return ElementType::kBF16;  // out
}

bool nvfp4_moe_accepts(int32_t pos, ElementType type, const Nvfp4MoeFields& fields) {
  // The router is a bf16 linear in front of the op: its logits may come as they are, or widened.
  if (pos == kMoeRouterLogits) return type == ElementType::kFloat32 || type == ElementType::kBF16;
  return type == nvfp4_moe_dtype(pos, fields);
}

const char* nvfp4_moe_tensor_name(int32_t pos, const Nvfp4MoeFields& fields) {
  const std::vector<InputSpec> in = input_specs(fields);
  if (pos == static_cast<int32_t>(in.size())) return "out";
  return pos >= 0 && pos < static_cast<int32_t>(in.size()) ? in[pos].name : "?";
}

std::string nvfp4_moe_counts_error(const Nvfp4MoeFields& fields, int32_t nbInputs, int32_t nbOutputs) {
  if (nbInputs == nvfp4_moe_inputs(fields) && nbOutputs == kNvfp4MoeOutputs) return "";
  return "expected " + std::to_string(nvfp4_moe_inputs(fields)) + " inputs " + input_list(fields) +
         " and 1 output (out), got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs);
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
  FieldValue shared;
  shared.name = kSharedExpert;
  shared.type = FieldType::kInt32;
  shared.length = 1;
  return {top_k, layout, activation, shared};
}

std::string parse_nvfp4_moe_fields(const std::vector<FieldView>& fields, Nvfp4MoeFields* out) {
  std::string e = check_known_fields(fields, {kTopK, kScaleLayout, kActivation, kSharedExpert});
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
  const FieldView* shared = find_field(fields, kSharedExpert, &e);
  if (!e.empty()) return e;
  if (shared != nullptr) {
    int64_t v = 0;
    e = read_int_field(*shared, 0, 1, &v);
    if (!e.empty()) return e;
    parsed.shared_expert = v == 1;
  }
  // scale_layout and activation: the same fields, checks and messages as Qwen35Nvfp4Linear's.
  std::vector<FieldView> rest;
  for (const FieldView& f : fields) {
    if (f.name != nullptr && std::string(f.name) != kTopK && std::string(f.name) != kSharedExpert) rest.push_back(f);
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
          FieldValue::string(kActivation, nvfp4_activation_name(fields.activation)),
          FieldValue::int32(kSharedExpert, fields.shared_expert ? 1 : 0)};
}

namespace {

// The shared expert's inputs against each other and H (-1: not known from the routed inputs).
std::string check_shared_shapes(const std::vector<std::vector<int64_t>>& in, const Nvfp4MoeFields& f, int64_t H) {
  using L = MoeSharedLinear;
  using P = MoeSharedPart;
  const L linears[] = {L::kGate, L::kUp, L::kDown};
  const auto pos = [&f](L l, P p) { return nvfp4_moe_shared_pos(f, l, p); };
  const auto name = [&f, &pos](L l, P p) { return std::string(nvfp4_moe_tensor_name(pos(l, p), f)); };
  for (L l : linears) {
    for (P p : {P::kWeight, P::kWeightScale}) {
      if (in[pos(l, p)].size() != 2) return name(l, p) + ": expected rank 2, got " + dims_str(in[pos(l, p)]);
    }
    for (P p : {P::kWeightScale2, P::kInputScale}) {
      if (pos(l, p) < 0) continue;  // the input scale without "w4a4"
      const auto& d = in[pos(l, p)];
      if (d.size() > 1 || (d.size() == 1 && conflict(d[0], 1))) {
        return name(l, p) + ": expected [] or [1] (one fp32 value), got " + dims_str(d);
      }
    }
  }
  const auto& gw = in[nvfp4_moe_shared_gate_weight_pos(f)];
  if (gw.empty() || gw.size() > 2 || (gw.size() == 2 && conflict(gw[0], 1))) {
    return "shared_expert_gate_weight: expected [H] or [1, H], got " + dims_str(gw);
  }
  const auto& g = in[pos(L::kGate, P::kWeight)];
  const auto& u = in[pos(L::kUp, P::kWeight)];
  const auto& d = in[pos(L::kDown, P::kWeight)];
  if (H < 0) H = first_known({twice(g[1]), twice(u[1]), d[0], gw.back()});
  const int64_t Is = first_known({g[0], u[0], twice(d[1])});
  if (Is >= 0 && (Is < 16 || Is % 16 != 0)) {
    return "shared_gate_weight / shared_up_weight / shared_down_weight: Is must be a positive multiple of 16, got "
           "shared_gate_weight " + dims_str(g) + ", shared_up_weight " + dims_str(u) + ", shared_down_weight " +
           dims_str(d);
  }
  if (conflict(twice(g[1]), H)) {
    return "shared_gate_weight: dim 1 must be H/2 = " + std::to_string(H / 2) + ", got " + dims_str(g);
  }
  if (conflict(u[0], Is)) {
    return "shared_up_weight: dim 0 must be Is = " + std::to_string(Is) + " (shared_gate_weight is " + dims_str(g) +
           "), got " + dims_str(u);
  }
  if (conflict(twice(u[1]), H)) {
    return "shared_up_weight: dim 1 must be H/2 = " + std::to_string(H / 2) + ", got " + dims_str(u);
  }
  if (conflict(d[0], H)) return "shared_down_weight: dim 0 must be H = " + std::to_string(H) + ", got " + dims_str(d);
  if (conflict(twice(d[1]), Is)) {
    return "shared_down_weight: dim 1 must be Is/2 = " + std::to_string(Is / 2) + " (shared_gate_weight is " +
           dims_str(g) + "), got " + dims_str(d);
  }
  for (L l : linears) {
    const bool down = l == L::kDown;
    const std::vector<int64_t> want = nvfp4_scale_dims(f.scale_layout, down ? H : Is, down ? Is : H);
    const auto& s = in[pos(l, P::kWeightScale)];
    if (conflict(s[0], want[0]) || conflict(s[1], want[1])) {
      return name(l, P::kWeightScale) + ": expected " + dims_str(want) + " for scale_layout \"" +
             nvfp4_scale_layout_name(f.scale_layout) + "\" (" + name(l, P::kWeight) + " " +
             dims_str(in[pos(l, P::kWeight)]) + "), got " + dims_str(s);
    }
  }
  if (conflict(gw.back(), H)) {
    return "shared_expert_gate_weight: expected [H] or [1, H] with H = " + std::to_string(H) + ", got " + dims_str(gw);
  }
  return "";
}

}  // namespace

std::string check_nvfp4_moe_shapes(const std::vector<std::vector<int64_t>>& in, const Nvfp4MoeFields& f) {
  if (static_cast<int32_t>(in.size()) != nvfp4_moe_inputs(f)) {
    return "inputs: expected " + std::to_string(nvfp4_moe_inputs(f)) + " " + input_list(f) + ", got " +
           std::to_string(in.size());
  }
  const int32_t routed = nvfp4_moe_routed_inputs(f);
  static const size_t ranks[] = {2, 2, 3, 3, 2, 3, 3, 1, 1, 1};
  for (int32_t i = 0; i < routed; ++i) {
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
  for (int32_t pos = kMoeDownScale2; pos < routed; ++pos) {
    if (conflict(in[pos][0], E)) {
      return std::string(nvfp4_moe_tensor_name(pos, f)) + ": expected [E] = [" + std::to_string(E) + "], got " +
             dims_str(in[pos]);
    }
  }
  return f.shared_expert ? check_shared_shapes(in, f, H) : "";
}

}  // namespace qwen35_trt::plugins
