// The Nvfp4Linear plugin's contract in plain C++ (see nvfp4_linear_rules.h).
#include "nvfp4_linear_rules.h"

#include <cstdint>

#include "shape_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kScaleLayout = "scale_layout";
const char* const kActivation = "activation";

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One fp32 value as [] or [1] (ONNX exporters write scalars either way).
std::string check_scalar(const std::vector<int64_t>& d, const char* name) {
  if (d.empty() || (d.size() == 1 && (d[0] == 1 || d[0] < 0))) return "";
  return std::string(name) + ": expected one value, shape [] or [1], got " + dims_str(d);
}

}  // namespace

const char* nvfp4_scale_layout_name(Nvfp4ScaleLayout layout) {
  switch (layout) {
    case Nvfp4ScaleLayout::kRowMajor: return "row_major";
    case Nvfp4ScaleLayout::kSwizzled128x4: return "swizzled_128x4";
    case Nvfp4ScaleLayout::kW4A16Fragments: return "w4a16_fragments";
  }
  return "?";
}

const char* nvfp4_activation_name(Nvfp4Activation activation) {
  return activation == Nvfp4Activation::kW4A16 ? "w4a16" : "w4a4";
}

int32_t nvfp4_linear_inputs(const Nvfp4LinearFields& fields) {
  return fields.activation == Nvfp4Activation::kW4A4 ? 5 : 4;
}

ElementType nvfp4_linear_dtype(int32_t pos, const Nvfp4LinearFields& fields) {
  if (pos == nvfp4_linear_inputs(fields)) return ElementType::kBF16;  // y
  switch (pos) {
    case kLinWeight:
    case kLinWeightScale: return ElementType::kInt8;
    case kLinWeightScale2:
    case kLinInputScale: return ElementType::kFloat32;
    default: return ElementType::kBF16;
  }
}

const char* nvfp4_linear_tensor_name(int32_t pos, const Nvfp4LinearFields& fields) {
  static const char* const names[] = {"x", "weight", "weight_scale", "weight_scale_2", "input_scale"};
  if (pos == nvfp4_linear_inputs(fields)) return "y";
  return pos >= 0 && pos < nvfp4_linear_inputs(fields) ? names[pos] : "?";
}

std::vector<FieldValue> nvfp4_linear_field_schema() {
  FieldValue layout;
  layout.name = kScaleLayout;
  layout.type = FieldType::kChar;
  FieldValue activation;
  activation.name = kActivation;
  activation.type = FieldType::kChar;
  return {layout, activation};
}

std::string parse_nvfp4_linear_fields(const std::vector<FieldView>& fields, Nvfp4LinearFields* out) {
  std::string e = check_known_fields(fields, {kScaleLayout, kActivation});
  if (!e.empty()) return e;
  Nvfp4LinearFields parsed;
  const FieldView* layout = find_field(fields, kScaleLayout, &e);
  if (!e.empty()) return e;
  if (layout == nullptr) {
    return "field 'scale_layout': missing (expected a string (CHAR) of \"row_major\", \"swizzled_128x4\", "
           "\"w4a16_fragments\")";
  }
  std::string value;
  e = read_string_field(*layout, {"row_major", "swizzled_128x4", "w4a16_fragments"}, &value);
  if (!e.empty()) return e;
  parsed.scale_layout = value == "row_major"        ? Nvfp4ScaleLayout::kRowMajor
                        : value == "swizzled_128x4" ? Nvfp4ScaleLayout::kSwizzled128x4
                                                    : Nvfp4ScaleLayout::kW4A16Fragments;
  const FieldView* activation = find_field(fields, kActivation, &e);
  if (!e.empty()) return e;
  if (activation != nullptr) {
    e = read_string_field(*activation, {"w4a16", "w4a4"}, &value);
    if (!e.empty()) return e;
    parsed.activation = value == "w4a16" ? Nvfp4Activation::kW4A16 : Nvfp4Activation::kW4A4;
  }
  if (parsed.activation == Nvfp4Activation::kW4A4 && parsed.scale_layout == Nvfp4ScaleLayout::kW4A16Fragments) {
    return "field 'activation': \"w4a4\" needs the weights in scale_layout \"swizzled_128x4\" (what the native "
           "FP4 GEMM reads), got scale_layout \"w4a16_fragments\", which only the W4A16 GEMM reads; use activation "
           "\"w4a16\" or rebuild the engine for a W4A4 target (sm_100)";
  }
  *out = parsed;
  return "";
}

std::vector<FieldValue> serialize_nvfp4_linear_fields(const Nvfp4LinearFields& fields) {
  return {FieldValue::string(kScaleLayout, nvfp4_scale_layout_name(fields.scale_layout)),
          FieldValue::string(kActivation, nvfp4_activation_name(fields.activation))};
}

std::vector<int64_t> nvfp4_scale_dims(Nvfp4ScaleLayout layout, int64_t rows, int64_t cols) {
  const int64_t blocks = cols < 0 ? -1 : cols / 16;
  if (layout != Nvfp4ScaleLayout::kSwizzled128x4) return {rows, blocks};  // row_major, w4a16_fragments
  return {rows < 0 ? -1 : round_up(rows, 128), blocks < 0 ? -1 : round_up(blocks, 4)};
}

std::string check_nvfp4_linear_shapes(const std::vector<std::vector<int64_t>>& in, const Nvfp4LinearFields& f) {
  const int32_t count = nvfp4_linear_inputs(f);
  if (static_cast<int32_t>(in.size()) != count) {
    return std::string("inputs: expected ") +
           (count == 5 ? "5 (x, weight, weight_scale, weight_scale_2, input_scale; activation \"w4a4\")"
                       : "4 (x, weight, weight_scale, weight_scale_2; activation \"w4a16\")") +
           ", got " + std::to_string(in.size());
  }
  const auto& x = in[kLinX];
  const auto& w = in[kLinWeight];
  if (x.size() != 2) return "x: expected rank 2 [T, K], got " + dims_str(x);
  if (w.size() != 2) return "weight: expected rank 2 [N, K/2], got " + dims_str(w);
  if (in[kLinWeightScale].size() != 2) return "weight_scale: expected rank 2, got " + dims_str(in[kLinWeightScale]);
  const int64_t k = x[1] >= 0 ? x[1] : w[1] >= 0 ? 2 * w[1] : -1;
  if (k >= 0 && (k < 16 || k % 16 != 0)) {
    return "x: K (dim 1) must be a positive multiple of 16 (one FP8 scale per 16 weights), got " + dims_str(x);
  }
  if (conflict(w[1] >= 0 ? 2 * w[1] : -1, k)) {
    return "weight: dim 1 must be K/2 = " + std::to_string(k / 2) + " (x is " + dims_str(x) + "), got " + dims_str(w);
  }
  if (w[0] == 0) return "weight: N (dim 0) must be at least 1, got " + dims_str(w);
  const std::vector<int64_t> want = nvfp4_scale_dims(f.scale_layout, w[0], k);
  const auto& s = in[kLinWeightScale];
  if (conflict(s[0], want[0]) || conflict(s[1], want[1])) {
    return std::string("weight_scale: expected ") + dims_str(want) + " for scale_layout \"" +
           nvfp4_scale_layout_name(f.scale_layout) + "\" (weight " + dims_str(w) + "), got " + dims_str(s);
  }
  std::string e = check_scalar(in[kLinWeightScale2], "weight_scale_2");
  if (e.empty() && count == 5) e = check_scalar(in[kLinInputScale], "input_scale");
  return e;
}

bool nvfp4_linear_may_run_native(const Nvfp4LinearFields& fields) {
  return fields.activation == Nvfp4Activation::kW4A4 && fields.scale_layout == Nvfp4ScaleLayout::kSwizzled128x4;
}

std::size_t nvfp4_padded_workspace_bytes(std::size_t kernel_bytes) { return padded_workspace_bytes(kernel_bytes); }

void* nvfp4_aligned_workspace(void* workspace) { return aligned_workspace(workspace); }

}  // namespace qwen35_trt::plugins
