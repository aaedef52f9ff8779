// The plugins' contracts in plain C++ (csrc/plugins/*_rules.h), without
// TensorRT: field parsing as the ONNX parser hands fields over, serialisation round trip, shape,
// dtype and aliasing rules.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "causal_conv1d_rules.h"
#include "gated_attention_rules.h"
#include "gdn_rules.h"
#include "nvfp4_linear_rules.h"
#include "nvfp4_moe_rules.h"
#include "workspace_rules.h"
#include "check.h"

using namespace qwen35_trt::plugins;

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string parse(const std::vector<FieldView>& fields, CausalConv1dFields* out = nullptr) {
  CausalConv1dFields scratch;
  return parse_causal_conv1d_fields(fields, out != nullptr ? out : &scratch);
}

void test_fields() {
  const int32_t four = 4;
  const int64_t four64 = 4;
  const float four_f = 4.0f;
  const char silu[] = "silu";  // with its NUL, as the ONNX parser passes a STRING
  const char relu[] = "relu";

  CausalConv1dFields f;
  CHECK(parse({{"width", FieldType::kInt32, &four, 1}}, &f).empty());
  CHECK(f.width == 4 && f.activation == "silu");
  CHECK(parse({{"width", FieldType::kInt64, &four64, 1}, {"activation", FieldType::kChar, silu, 5}}, &f).empty());
  CHECK(f.width == 4);
  CHECK(parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kChar, silu, 4}}).empty());  // no NUL

  // Missing, wrong type, wrong length, out of range, unknown, duplicated: each names the field.
  std::string e = parse({});
  CHECK_MSG(starts_with(e, "field 'width': missing") && contains(e, "[2, 8]"), e);
  e = parse({{"width", FieldType::kFloat32, &four_f, 1}});
  CHECK_MSG(starts_with(e, "field 'width': expected one integer (INT32) in [2, 8], got FLOAT32"), e);
  e = parse({{"width", FieldType::kInt32, &four, 0}});
  CHECK_MSG(starts_with(e, "field 'width'") && contains(e, "got 0 values"), e);
  for (int32_t bad : {1, 9, -4}) {
    e = parse({{"width", FieldType::kInt32, &bad, 1}});
    CHECK_MSG(starts_with(e, "field 'width'") && contains(e, "got " + std::to_string(bad)), e);
  }
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kChar, relu, 5}});
  CHECK_MSG(starts_with(e, "field 'activation': expected a string (CHAR) of \"silu\", got \"relu\""), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"activation", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'activation'") && contains(e, "got INT32"), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"kernel_size", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'kernel_size': unknown (expected only: width, activation)"), e);
  e = parse({{"width", FieldType::kInt32, &four, 1}, {"width", FieldType::kInt32, &four, 1}});
  CHECK_MSG(starts_with(e, "field 'width': given more than once"), e);
}

void test_schema_and_serialisation() {
  const std::vector<FieldValue> schema = causal_conv1d_field_schema();
  CHECK(schema.size() == 2);
  CHECK(schema[0].name == "width" && schema[0].type == FieldType::kInt32);
  CHECK(schema[1].name == "activation" && schema[1].type == FieldType::kChar);

  for (int32_t width = kConvMinWidth; width <= kConvMaxWidth; ++width) {
    CausalConv1dFields in;
    in.width = width;
    const std::vector<FieldValue> stored = serialize_causal_conv1d_fields(in);
    std::vector<FieldView> views;
    for (const FieldValue& v : stored) views.push_back(view_of(v));
    CausalConv1dFields out;
    CHECK(parse(views, &out).empty());
    CHECK(out.width == width && out.activation == "silu");
  }
  const FieldValue s = FieldValue::string("activation", "silu");
  CHECK(s.length == 5 && s.bytes.back() == '\0');  // the ONNX parser's convention
}

void test_shapes() {
  CausalConv1dFields f;
  f.width = 4;
  // x [T, C], weight [C, W], pool [S, C, W-1], slots [B], cu_seqlens [B+1], has_initial_state [B].
  CHECK(check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}, {2}}, f).empty());
  CHECK(check_causal_conv1d_shapes({{-1, 64}, {64, 4}, {-1, 64, 3}, {-1}, {-1}, {-1}}, f).empty());  // build time
  CHECK(check_causal_conv1d_shapes({{-1, -1}, {-1, -1}, {-1, -1, -1}, {-1}, {-1}, {-1}}, f).empty());

  std::string e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}}, f);
  CHECK_MSG(starts_with(e, "inputs: expected 6"), e);
  e = check_causal_conv1d_shapes({{10, 64, 1}, {64, 4}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "x: expected rank 2"), e);
  e = check_causal_conv1d_shapes({{10, 60}, {60, 4}, {5, 60, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "x: channels (dim 1) must be a multiple of 8"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {32, 4}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "weight / conv_state_pool: channels differ"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 3}, {5, 64, 3}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "weight: dim 1 must equal the field width = 4"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 4}, {2}, {3}, {2}}, f);
  CHECK_MSG(starts_with(e, "conv_state_pool: dim 2 must be width - 1 = 3"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {2}, {2}}, f);
  CHECK_MSG(starts_with(e, "cu_seqlens: must have B + 1 = 3"), e);
  e = check_causal_conv1d_shapes({{10, 64}, {64, 4}, {5, 64, 3}, {2}, {3}, {3}}, f);
  CHECK_MSG(starts_with(e, "has_initial_state: must have one entry per sequence"), e);
}

void test_dtypes_and_aliasing() {
  const ElementType expected[] = {ElementType::kBF16,  ElementType::kBF16, ElementType::kBF16, ElementType::kInt32,
                                  ElementType::kInt32, ElementType::kBool, ElementType::kBF16, ElementType::kBF16};
  for (int32_t pos = 0; pos < kCausalConv1dInputs + kCausalConv1dOutputs; ++pos) {
    CHECK_MSG(causal_conv1d_dtype(pos) == expected[pos], causal_conv1d_tensor_name(pos));
  }
  CHECK(causal_conv1d_output_shape_source(0) == kConvX);
  CHECK(causal_conv1d_output_shape_source(1) == kConvStatePool);
  CHECK(causal_conv1d_aliased_input(0) == -1);
  CHECK(causal_conv1d_aliased_input(1) == kConvStatePool);
  CHECK(causal_conv1d_workspace_bytes() == 0);
  CHECK(std::string(kCausalConv1dName) == "Qwen35CausalConv1d");
}

// --- GatedDeltaNet ------------------------------------------------------------------------------

std::string parse_gdn(const std::vector<FieldView>& fields, GatedDeltaNetFields* out = nullptr) {
  GatedDeltaNetFields scratch;
  return parse_gated_delta_net_fields(fields, out != nullptr ? out : &scratch);
}

void test_gdn_fields() {
  const float half = 0.5f, zero = 0.0f, neg = -1.0f, inf = 1.0f / 0.0f;
  const int32_t one = 1, zero_i = 0, two = 2;
  const char chunked[] = "chunked";
  const char recurrent[] = "recurrent";
  const char fast[] = "fast";

  GatedDeltaNetFields f;
  CHECK(parse_gdn({}, &f).empty());  // every field is optional
  CHECK(!f.has_scale && f.use_qk_l2norm == 1 && f.algorithm == GdnAlgorithm::kAuto);
  CHECK(std::abs(gated_delta_net_scale(f, 128) - 0.08838835f) < 1e-7f);
  CHECK(parse_gdn({{"scale", FieldType::kFloat32, &half, 1}, {"use_qk_l2norm", FieldType::kInt32, &zero_i, 1},
                   {"algorithm", FieldType::kChar, chunked, 8}},
                  &f)
            .empty());
  CHECK(f.has_scale && f.scale == 0.5f && f.use_qk_l2norm == 0 && f.algorithm == GdnAlgorithm::kChunked);
  CHECK(gated_delta_net_scale(f, 128) == 0.5f);
  CHECK(parse_gdn({{"algorithm", FieldType::kChar, recurrent, 9}}, &f).empty() &&
        f.algorithm == GdnAlgorithm::kRecurrent);

  std::string e = parse_gdn({{"scale", FieldType::kFloat32, &zero, 1}});
  CHECK_MSG(starts_with(e, "field 'scale': expected one finite float (FLOAT32) in (0, 1e+06), got 0"), e);
  e = parse_gdn({{"scale", FieldType::kFloat32, &neg, 1}});
  CHECK_MSG(starts_with(e, "field 'scale'") && contains(e, "got -1"), e);
  e = parse_gdn({{"scale", FieldType::kFloat32, &inf, 1}});
  CHECK_MSG(starts_with(e, "field 'scale'") && contains(e, "got inf"), e);
  e = parse_gdn({{"scale", FieldType::kInt32, &one, 1}});
  CHECK_MSG(starts_with(e, "field 'scale'") && contains(e, "got INT32"), e);
  e = parse_gdn({{"use_qk_l2norm", FieldType::kInt32, &two, 1}});
  CHECK_MSG(starts_with(e, "field 'use_qk_l2norm': expected one integer (INT32) in [0, 1], got 2"), e);
  e = parse_gdn({{"use_qk_l2norm", FieldType::kFloat32, &half, 1}});
  CHECK_MSG(starts_with(e, "field 'use_qk_l2norm'") && contains(e, "got FLOAT32"), e);
  e = parse_gdn({{"algorithm", FieldType::kChar, fast, 5}});
  CHECK_MSG(starts_with(e, "field 'algorithm': expected a string (CHAR) of \"auto\", \"chunked\", \"recurrent\", "
                           "got \"fast\""),
            e);
  e = parse_gdn({{"head_k_dim", FieldType::kInt32, &one, 1}});
  CHECK_MSG(starts_with(e, "field 'head_k_dim': unknown (expected only: scale, use_qk_l2norm, algorithm)"), e);
  e = parse_gdn({{"scale", FieldType::kFloat32, &half, 1}, {"scale", FieldType::kFloat32, &half, 1}});
  CHECK_MSG(starts_with(e, "field 'scale': given more than once"), e);
}

void test_gdn_schema_and_serialisation() {
  const std::vector<FieldValue> schema = gated_delta_net_field_schema();
  CHECK(schema.size() == 3);
  CHECK(schema[0].name == "scale" && schema[0].type == FieldType::kFloat32);
  CHECK(schema[1].name == "use_qk_l2norm" && schema[1].type == FieldType::kInt32);
  CHECK(schema[2].name == "algorithm" && schema[2].type == FieldType::kChar);

  for (GdnAlgorithm alg : {GdnAlgorithm::kAuto, GdnAlgorithm::kChunked, GdnAlgorithm::kRecurrent}) {
    for (bool has_scale : {false, true}) {
      GatedDeltaNetFields in;
      in.algorithm = alg;
      in.has_scale = has_scale;
      in.scale = has_scale ? 0.125f : 0.0f;
      in.use_qk_l2norm = has_scale ? 0 : 1;
      const std::vector<FieldValue> stored = serialize_gated_delta_net_fields(in);
      CHECK(stored.size() == (has_scale ? 3u : 2u));  // an absent scale stays absent (dk-dependent default)
      std::vector<FieldView> views;
      for (const FieldValue& v : stored) views.push_back(view_of(v));
      GatedDeltaNetFields out;
      CHECK(parse_gdn(views, &out).empty());
      CHECK(out.algorithm == alg && out.has_scale == has_scale && out.scale == in.scale &&
            out.use_qk_l2norm == in.use_qk_l2norm);
    }
  }
}

// q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, has_initial_state.
std::vector<std::vector<int64_t>> gdn_dims(int64_t T, int64_t Hk, int64_t dk, int64_t Hv, int64_t dv, int64_t S,
                                           int64_t B) {
  return {{T, Hk, dk}, {T, Hk, dk}, {T, Hv, dv}, {T, Hv},  {T, Hv}, {Hv},
          {Hv},        {S, Hv, dk, dv}, {B},      {B < 0 ? -1 : B + 1}, {B}};
}

void test_gdn_shapes() {
  GatedDeltaNetFields f;
  CHECK(check_gated_delta_net_shapes(gdn_dims(10, 16, 128, 32, 128, 5, 2), f).empty());  // 35B-A3B heads
  CHECK(check_gated_delta_net_shapes(gdn_dims(-1, 16, 128, 32, 128, -1, -1), f).empty());  // build time
  CHECK(check_gated_delta_net_shapes(gdn_dims(-1, -1, -1, -1, -1, -1, -1), f).empty());
  CHECK(check_gated_delta_net_shapes(gdn_dims(3, 2, 32, 4, 32, 4, 3), f).empty());

  auto d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d.pop_back();
  std::string e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "inputs: expected 11"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnA] = {10, 32, 1};
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "a: expected rank 2"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnV][0] = 9;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "v: dim 0 (tokens) must equal q's 10"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnK][2] = 64;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "k: must have q's [T, Hk, dk]"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnB][1] = 16;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "b: dim 1 must be Hv = 32"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnDtBias][0] = 31;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "dt_bias: must have Hv = 32 entries"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnStatePool][3] = 64;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "state_pool: must be [num_slots, Hv, dk, dv] = [num_slots, 32, 128, 128]"), e);
  e = check_gated_delta_net_shapes(gdn_dims(10, 3, 128, 32, 128, 5, 2), f);
  CHECK_MSG(starts_with(e, "v: Hv (dim 1) must be a positive multiple of Hk (q dim 1) = 3"), e);
  e = check_gated_delta_net_shapes(gdn_dims(10, 16, 128, 32, 48, 5, 2), f);
  CHECK_MSG(starts_with(e, "v: dv (dim 2) must be a positive multiple of 32, got 48"), e);
  e = check_gated_delta_net_shapes(gdn_dims(10, 16, 96, 32, 128, 5, 2), f);
  CHECK_MSG(starts_with(e, "q: dk (dim 2) must be 32, 64, 128 or 256"), e);
  GatedDeltaNetFields chunked;
  chunked.algorithm = GdnAlgorithm::kChunked;
  e = check_gated_delta_net_shapes(gdn_dims(10, 16, 256, 32, 128, 5, 2), chunked);
  CHECK_MSG(starts_with(e, "q: dk (dim 2) must be 64 or 128 with field algorithm = \"chunked\", got 256"), e);
  CHECK(check_gated_delta_net_shapes(gdn_dims(10, 16, 256, 32, 128, 5, 2), f).empty());  // recurrent runs it
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnCuSeqlens][0] = 2;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "cu_seqlens: must have B + 1 = 3"), e);
  d = gdn_dims(10, 16, 128, 32, 128, 5, 2);
  d[kGdnHasInitialState][0] = 3;
  e = check_gated_delta_net_shapes(d, f);
  CHECK_MSG(starts_with(e, "has_initial_state: must have one entry per sequence"), e);
  e = check_gated_delta_net_shapes(gdn_dims(2, 16, 128, 32, 128, 5, 3), f);
  CHECK_MSG(starts_with(e, "q: T (dim 0) must be >= B"), e);
}

void test_gdn_form_and_workspace() {
  const std::size_t need = 106 * 1024;  // a need above sm_120's 99 KiB, to exercise the fallback
  const int64_t h100 = 227 * 1024, rtx = 99 * 1024;
  GatedDeltaNetFields autof, chunked, recurrent;
  chunked.algorithm = GdnAlgorithm::kChunked;
  recurrent.algorithm = GdnAlgorithm::kRecurrent;
  GdnForm form = GdnForm::kChunked;
  auto pick = [&](const GatedDeltaNetFields& f, int64_t T, int64_t B, int64_t dk, std::size_t shared, int64_t optin) {
    const std::string e = choose_gated_delta_net_form(f, T, B, dk, shared, optin, &form);
    CHECK_MSG(e.empty(), e);
    return form;
  };
  // auto: prefill chunked where it fits; a decode step (T == B), and a prefill whose need exceeds
  // the device's limit, recurrent.
  CHECK(pick(autof, 100, 2, 128, need, h100) == GdnForm::kChunked);
  CHECK(pick(autof, 8, 8, 128, need, h100) == GdnForm::kRecurrent);
  CHECK(pick(autof, 100, 2, 128, need, rtx) == GdnForm::kRecurrent);
  CHECK(pick(autof, 100, 2, 256, 0, h100) == GdnForm::kRecurrent);
  CHECK(pick(autof, 100, 2, 64, 77 * 1024, rtx) == GdnForm::kChunked);
  // recurrent: always; chunked: always where it fits (decode steps too), else an error naming the field.
  CHECK(pick(recurrent, 100, 2, 128, need, h100) == GdnForm::kRecurrent);
  CHECK(pick(chunked, 8, 8, 128, need, h100) == GdnForm::kChunked);
  const std::string e = choose_gated_delta_net_form(chunked, 100, 2, 128, need, rtx, &form);
  CHECK_MSG(starts_with(e, "field 'algorithm': \"chunked\" needs 108544 bytes of shared memory per block for dk = "
                           "128, this device allows 101376"),
            e);

  CHECK(gated_delta_net_may_run_chunked(autof, 128) && gated_delta_net_may_run_chunked(autof, -1));
  CHECK(!gated_delta_net_may_run_chunked(autof, 256) && !gated_delta_net_may_run_chunked(recurrent, 128));
  CHECK(gated_delta_net_workspace_bytes(true, 1000) == 1000 + kGdnWorkspaceAlignment);
  CHECK(gated_delta_net_workspace_bytes(false, 1000) == 0 && gated_delta_net_workspace_bytes(true, 0) == 0);
  alignas(256) static unsigned char buffer[1024];
  for (std::size_t offset : {0, 1, 16, 255, 256}) {
    void* aligned = gated_delta_net_aligned_workspace(buffer + offset);
    const auto a = reinterpret_cast<std::uintptr_t>(aligned), base = reinterpret_cast<std::uintptr_t>(buffer + offset);
    CHECK(a % 256 == 0 && a >= base && a - base < kGdnWorkspaceAlignment);
  }
}

void test_gdn_dtypes_and_aliasing() {
  for (int32_t pos = 0; pos < kGatedDeltaNetInputs + kGatedDeltaNetOutputs; ++pos) {
    const ElementType want = pos == kGdnALog || pos == kGdnDtBias || pos == kGdnStatePool || pos == kGdnStatePoolOut
                                 ? ElementType::kFloat32
                             : pos == kGdnSlots || pos == kGdnCuSeqlens ? ElementType::kInt32
                             : pos == kGdnHasInitialState               ? ElementType::kBool
                                                                        : ElementType::kBF16;
    CHECK_MSG(gated_delta_net_dtype(pos) == want, gated_delta_net_tensor_name(pos));
  }
  CHECK(gated_delta_net_output_shape_source(0) == kGdnV);
  CHECK(gated_delta_net_output_shape_source(1) == kGdnStatePool);
  CHECK(gated_delta_net_aliased_input(0) == -1);
  CHECK(gated_delta_net_aliased_input(1) == kGdnStatePool);
  CHECK(std::string(kGatedDeltaNetName) == "Qwen35GatedDeltaNet");
}

// --- Qwen35Nvfp4Linear ----------------------------------------------------------------------------

std::string parse_linear(const std::vector<FieldView>& fields, Nvfp4LinearFields* out = nullptr) {
  Nvfp4LinearFields scratch;
  return parse_nvfp4_linear_fields(fields, out != nullptr ? out : &scratch);
}

void test_linear_fields() {
  const char row[] = "row_major";
  const char sw[] = "swizzled_128x4";
  const char w4a4[] = "w4a4";
  const char w4a16[] = "w4a16";
  const char col[] = "col_major";
  const char frag[] = "w4a16_fragments";
  const int32_t one = 1;

  Nvfp4LinearFields f;
  CHECK(parse_linear({{"scale_layout", FieldType::kChar, row, 10}}, &f).empty());
  CHECK(f.scale_layout == Nvfp4ScaleLayout::kRowMajor && f.activation == Nvfp4Activation::kW4A16);
  CHECK(nvfp4_linear_inputs(f) == 4);
  CHECK(parse_linear({{"activation", FieldType::kChar, w4a4, 4}, {"scale_layout", FieldType::kChar, sw, 15}}, &f).empty());
  CHECK(f.scale_layout == Nvfp4ScaleLayout::kSwizzled128x4 && f.activation == Nvfp4Activation::kW4A4);
  CHECK(nvfp4_linear_inputs(f) == 5);
  CHECK(parse_linear({{"scale_layout", FieldType::kChar, row, 10}, {"activation", FieldType::kChar, w4a16, 6}}, &f).empty());
  CHECK(f.activation == Nvfp4Activation::kW4A16);
  CHECK(parse_linear({{"scale_layout", FieldType::kChar, frag, 16}, {"activation", FieldType::kChar, w4a16, 6}}, &f).empty());
  CHECK(f.scale_layout == Nvfp4ScaleLayout::kW4A16Fragments && f.activation == Nvfp4Activation::kW4A16);
  CHECK(std::string(nvfp4_scale_layout_name(f.scale_layout)) == "w4a16_fragments");
  // The fragment layout is read by the W4A16 GEMM only: W4A4 needs the native path's swizzled scales.
  std::string e = parse_linear({{"scale_layout", FieldType::kChar, frag, 16}, {"activation", FieldType::kChar, w4a4, 5}});
  CHECK_MSG(starts_with(e, "field 'activation': \"w4a4\" needs the weights in scale_layout \"swizzled_128x4\"") &&
                contains(e, "got scale_layout \"w4a16_fragments\""),
            e);

  // The layout is required: the layouts have the same size for N % 128 == 0 and K % 64 == 0.
  e = parse_linear({});
  CHECK_MSG(starts_with(e, "field 'scale_layout': missing"), e);
  e = parse_linear({{"scale_layout", FieldType::kChar, col, 10}});
  CHECK_MSG(starts_with(e, "field 'scale_layout': expected a string (CHAR) of \"row_major\", \"swizzled_128x4\", "
                           "\"w4a16_fragments\", got \"col_major\""),
            e);
  e = parse_linear({{"scale_layout", FieldType::kInt32, &one, 1}});
  CHECK_MSG(starts_with(e, "field 'scale_layout'") && contains(e, "got INT32"), e);
  e = parse_linear({{"scale_layout", FieldType::kChar, row, 10}, {"activation", FieldType::kChar, row, 10}});
  CHECK_MSG(starts_with(e, "field 'activation': expected a string (CHAR) of \"w4a16\", \"w4a4\", got \"row_major\""), e);
  e = parse_linear({{"scale_layout", FieldType::kChar, row, 10}, {"top_k", FieldType::kInt32, &one, 1}});
  CHECK_MSG(starts_with(e, "field 'top_k': unknown (expected only: scale_layout, activation)"), e);
  e = parse_linear({{"scale_layout", FieldType::kChar, row, 10}, {"scale_layout", FieldType::kChar, sw, 15}});
  CHECK_MSG(starts_with(e, "field 'scale_layout': given more than once"), e);
}

void test_linear_schema_and_serialisation() {
  const auto schema = nvfp4_linear_field_schema();
  CHECK(schema.size() == 2);
  CHECK(schema[0].name == "scale_layout" && schema[0].type == FieldType::kChar);
  CHECK(schema[1].name == "activation" && schema[1].type == FieldType::kChar);
  for (const auto layout : {Nvfp4ScaleLayout::kRowMajor, Nvfp4ScaleLayout::kSwizzled128x4, Nvfp4ScaleLayout::kW4A16Fragments}) {
    for (const auto act : {Nvfp4Activation::kW4A16, Nvfp4Activation::kW4A4}) {
      if (layout == Nvfp4ScaleLayout::kW4A16Fragments && act == Nvfp4Activation::kW4A4) continue;  // refused
      Nvfp4LinearFields f;
      f.scale_layout = layout;
      f.activation = act;
      const auto stored = serialize_nvfp4_linear_fields(f);
      std::vector<FieldView> views;
      for (const auto& v : stored) views.push_back(view_of(v));
      Nvfp4LinearFields back;
      CHECK(parse_linear(views, &back).empty());
      CHECK(back.scale_layout == layout && back.activation == act);
    }
  }
}

void test_linear_shapes() {
  Nvfp4LinearFields row;  // row_major, w4a16
  Nvfp4LinearFields sw;
  sw.scale_layout = Nvfp4ScaleLayout::kSwizzled128x4;
  sw.activation = Nvfp4Activation::kW4A4;
  // x [T, K], weight [N, K/2], weight_scale, weight_scale_2 ([] or [1]), input_scale (w4a4).
  CHECK(check_nvfp4_linear_shapes({{7, 64}, {48, 32}, {48, 4}, {}}, row).empty());
  CHECK(check_nvfp4_linear_shapes({{-1, 64}, {48, 32}, {48, 4}, {1}}, row).empty());  // dynamic T
  CHECK(check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {256, 4}, {}, {1}}, sw).empty());  // padded to 128 x 4
  CHECK(check_nvfp4_linear_shapes({{-1, -1}, {-1, -1}, {-1, -1}, {-1}}, row).empty());
  CHECK(nvfp4_scale_dims(Nvfp4ScaleLayout::kSwizzled128x4, 129, 16) == (std::vector<int64_t>{256, 4}));
  CHECK(nvfp4_scale_dims(Nvfp4ScaleLayout::kRowMajor, 129, 16) == (std::vector<int64_t>{129, 1}));
  CHECK(nvfp4_scale_dims(Nvfp4ScaleLayout::kW4A16Fragments, 129, 16) == (std::vector<int64_t>{129, 1}));
  Nvfp4LinearFields frag;  // w4a16_fragments: the row-major scale shape
  frag.scale_layout = Nvfp4ScaleLayout::kW4A16Fragments;
  CHECK(check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {200, 3}, {}}, frag).empty());

  std::string e = check_nvfp4_linear_shapes({{7, 64}, {48, 32}, {48, 4}, {}, {}}, row);
  CHECK_MSG(starts_with(e, "inputs: expected 4 (x, weight, weight_scale, weight_scale_2; activation \"w4a16\"), got 5"), e);
  e = check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {256, 4}, {}}, sw);
  CHECK_MSG(starts_with(e, "inputs: expected 5") && contains(e, "input_scale"), e);
  e = check_nvfp4_linear_shapes({{7, 2, 64}, {48, 32}, {48, 4}, {}}, row);
  CHECK_MSG(starts_with(e, "x: expected rank 2 [T, K], got [7, 2, 64]"), e);
  e = check_nvfp4_linear_shapes({{7, 40}, {48, 20}, {48, 2}, {}}, row);
  CHECK_MSG(starts_with(e, "x: K (dim 1) must be a positive multiple of 16"), e);
  e = check_nvfp4_linear_shapes({{7, 64}, {48, 16}, {48, 4}, {}}, row);
  CHECK_MSG(starts_with(e, "weight: dim 1 must be K/2 = 32"), e);
  e = check_nvfp4_linear_shapes({{7, 64}, {0, 32}, {0, 4}, {}}, row);
  CHECK_MSG(starts_with(e, "weight: N (dim 0) must be at least 1"), e);
  e = check_nvfp4_linear_shapes({{7, 64}, {48, 32}, {128, 4}, {}}, row);  // swizzled scales, row_major field
  CHECK_MSG(starts_with(e, "weight_scale: expected [48, 4] for scale_layout \"row_major\""), e);
  e = check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {200, 3}, {}, {1}}, sw);
  CHECK_MSG(starts_with(e, "weight_scale: expected [256, 4] for scale_layout \"swizzled_128x4\""), e);
  e = check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {256, 4}, {}}, frag);  // swizzled-sized scales
  CHECK_MSG(starts_with(e, "weight_scale: expected [200, 3] for scale_layout \"w4a16_fragments\""), e);
  e = check_nvfp4_linear_shapes({{7, 64}, {48, 32}, {48, 4}, {2}}, row);
  CHECK_MSG(starts_with(e, "weight_scale_2: expected one value, shape [] or [1], got [2]"), e);
  e = check_nvfp4_linear_shapes({{7, 48}, {200, 24}, {256, 4}, {}, {1, 1}}, sw);
  CHECK_MSG(starts_with(e, "input_scale: expected one value"), e);
}

void test_linear_dtypes_and_workspace() {
  Nvfp4LinearFields f;
  CHECK(nvfp4_linear_dtype(kLinX, f) == ElementType::kBF16);
  CHECK(nvfp4_linear_dtype(kLinWeight, f) == ElementType::kInt8);  // raw bytes
  CHECK(nvfp4_linear_dtype(kLinWeightScale, f) == ElementType::kInt8);
  CHECK(nvfp4_linear_dtype(kLinWeightScale2, f) == ElementType::kFloat32);
  CHECK(nvfp4_linear_dtype(4, f) == ElementType::kBF16);  // y: the output with 4 inputs
  CHECK(std::string(nvfp4_linear_tensor_name(4, f)) == "y");
  f.activation = Nvfp4Activation::kW4A4;
  CHECK(nvfp4_linear_dtype(kLinInputScale, f) == ElementType::kFloat32);
  CHECK(std::string(nvfp4_linear_tensor_name(kLinInputScale, f)) == "input_scale");
  CHECK(nvfp4_linear_dtype(5, f) == ElementType::kBF16);
  CHECK(std::string(element_type_name(ElementType::kInt8)) == "int8");
  // Only w4a4 with swizzled scales can take the native path, the one that needs a workspace.
  Nvfp4LinearFields g;
  CHECK(!nvfp4_linear_may_run_native(g));
  g.activation = Nvfp4Activation::kW4A4;
  CHECK(!nvfp4_linear_may_run_native(g));  // row-major scales: the W4A16 kernels
  g.scale_layout = Nvfp4ScaleLayout::kSwizzled128x4;
  CHECK(nvfp4_linear_may_run_native(g));
  g.activation = Nvfp4Activation::kW4A16;
  CHECK(!nvfp4_linear_may_run_native(g));
  // Workspace: nothing stays nothing; otherwise room to align the pointer to 256 bytes.
  CHECK(nvfp4_padded_workspace_bytes(0) == 0);
  CHECK(nvfp4_padded_workspace_bytes(1000) == 1256);
  alignas(256) static unsigned char buf[1024];
  CHECK(nvfp4_aligned_workspace(buf) == buf);
  CHECK(nvfp4_aligned_workspace(buf + 1) == buf + 256);
  CHECK(nvfp4_aligned_workspace(nullptr) == nullptr);
}

// --- Qwen35Nvfp4MoE -------------------------------------------------------------------------------

std::string parse_moe(const std::vector<FieldView>& fields, Nvfp4MoeFields* out = nullptr) {
  Nvfp4MoeFields scratch;
  return parse_nvfp4_moe_fields(fields, out != nullptr ? out : &scratch);
}

void test_moe_fields() {
  const int32_t two = 2, zero = 0, big = 33;
  const float two_f = 2.0f;
  const char row[] = "row_major";
  const char sw[] = "swizzled_128x4";
  const char w4a4[] = "w4a4";
  Nvfp4MoeFields f;
  CHECK(parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10}}, &f).empty());
  CHECK(f.top_k == 2 && f.scale_layout == Nvfp4ScaleLayout::kRowMajor && f.activation == Nvfp4Activation::kW4A16);
  CHECK(nvfp4_moe_inputs(f) == 8);
  CHECK(parse_moe({{"scale_layout", FieldType::kChar, sw, 15}, {"activation", FieldType::kChar, w4a4, 5},
                   {"top_k", FieldType::kInt32, &two, 1}}, &f).empty());
  CHECK(f.scale_layout == Nvfp4ScaleLayout::kSwizzled128x4 && f.activation == Nvfp4Activation::kW4A4);
  CHECK(nvfp4_moe_inputs(f) == 10);
  const char frag[] = "w4a16_fragments";  // sm_90 / sm_120 engines
  CHECK(parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, frag, 16}}, &f).empty());
  CHECK(f.scale_layout == Nvfp4ScaleLayout::kW4A16Fragments && f.activation == Nvfp4Activation::kW4A16);
  std::string e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, frag, 16},
                             {"activation", FieldType::kChar, w4a4, 5}});
  CHECK_MSG(starts_with(e, "field 'activation': \"w4a4\" needs the weights in scale_layout \"swizzled_128x4\""), e);

  e = parse_moe({{"scale_layout", FieldType::kChar, row, 10}});
  CHECK_MSG(starts_with(e, "field 'top_k': missing (expected one integer (INT32) in [1, 32])"), e);
  for (const int32_t* bad : {&zero, &big}) {
    e = parse_moe({{"top_k", FieldType::kInt32, bad, 1}, {"scale_layout", FieldType::kChar, row, 10}});
    CHECK_MSG(starts_with(e, "field 'top_k': expected one integer (INT32) in [1, 32], got " + std::to_string(*bad)), e);
  }
  e = parse_moe({{"top_k", FieldType::kFloat32, &two_f, 1}, {"scale_layout", FieldType::kChar, row, 10}});
  CHECK_MSG(starts_with(e, "field 'top_k'") && contains(e, "got FLOAT32"), e);
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}});
  CHECK_MSG(starts_with(e, "field 'scale_layout': missing"), e);
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                 {"activation", FieldType::kChar, row, 10}});
  CHECK_MSG(starts_with(e, "field 'activation': expected a string (CHAR) of \"w4a16\", \"w4a4\""), e);
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                 {"shared_intermediate", FieldType::kInt32, &two, 1}});
  CHECK_MSG(starts_with(e, "field 'shared_intermediate': unknown (expected only: top_k, scale_layout, activation, "
                           "shared_expert)"),
            e);
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"top_k", FieldType::kInt32, &two, 1},
                 {"scale_layout", FieldType::kChar, row, 10}});
  CHECK_MSG(starts_with(e, "field 'top_k': given more than once"), e);

  // shared_expert: optional (default 0), 0 or 1, an integer; 1 adds 10 (w4a16) or 13 (w4a4) inputs.
  const int32_t one = 1;
  const int64_t one64 = 1;
  CHECK(parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10}}, &f).empty());
  CHECK(!f.shared_expert);
  CHECK(parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                   {"shared_expert", FieldType::kInt32, &zero, 1}}, &f).empty());
  CHECK(!f.shared_expert && nvfp4_moe_inputs(f) == 8);
  CHECK(parse_moe({{"shared_expert", FieldType::kInt32, &one, 1}, {"top_k", FieldType::kInt32, &two, 1},
                   {"scale_layout", FieldType::kChar, row, 10}}, &f).empty());
  CHECK(f.shared_expert && f.top_k == 2 && f.activation == Nvfp4Activation::kW4A16);
  CHECK(nvfp4_moe_routed_inputs(f) == 8 && nvfp4_moe_inputs(f) == 18);
  CHECK(parse_moe({{"shared_expert", FieldType::kInt64, &one64, 1}, {"top_k", FieldType::kInt32, &two, 1},
                   {"scale_layout", FieldType::kChar, sw, 15}, {"activation", FieldType::kChar, w4a4, 5}}, &f).empty());
  CHECK(f.shared_expert && nvfp4_moe_routed_inputs(f) == 10 && nvfp4_moe_inputs(f) == 23);
  const int32_t two_shared = 2, minus = -1;
  for (const int32_t* bad : {&two_shared, &minus}) {
    e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                   {"shared_expert", FieldType::kInt32, bad, 1}});
    CHECK_MSG(starts_with(e, "field 'shared_expert': expected one integer (INT32) in [0, 1], got " +
                                 std::to_string(*bad)),
              e);
  }
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                 {"shared_expert", FieldType::kChar, sw, 15}});
  CHECK_MSG(starts_with(e, "field 'shared_expert': expected one integer (INT32) in [0, 1], got CHAR"), e);
  e = parse_moe({{"top_k", FieldType::kInt32, &two, 1}, {"scale_layout", FieldType::kChar, row, 10},
                 {"shared_expert", FieldType::kInt32, &one, 1}, {"shared_expert", FieldType::kInt32, &one, 1}});
  CHECK_MSG(starts_with(e, "field 'shared_expert': given more than once"), e);
}

void test_moe_schema_and_serialisation() {
  const auto schema = nvfp4_moe_field_schema();
  CHECK(schema.size() == 4);
  CHECK(schema[0].name == "top_k" && schema[0].type == FieldType::kInt32);
  CHECK(schema[1].name == "scale_layout" && schema[1].type == FieldType::kChar);
  CHECK(schema[2].name == "activation" && schema[2].type == FieldType::kChar);
  CHECK(schema[3].name == "shared_expert" && schema[3].type == FieldType::kInt32);
  for (const bool shared : {false, true}) {
    for (const bool frag : {false, true}) {
    Nvfp4MoeFields f;
    f.top_k = 8;
    f.scale_layout = frag ? Nvfp4ScaleLayout::kW4A16Fragments : Nvfp4ScaleLayout::kSwizzled128x4;
    f.activation = frag ? Nvfp4Activation::kW4A16 : Nvfp4Activation::kW4A4;
    f.shared_expert = shared;
    const auto stored = serialize_nvfp4_moe_fields(f);
    // shared_expert is written even at its default, so a plan never depends on the default.
    CHECK(stored.size() == 4 && stored[3].name == "shared_expert" && stored[3].type == FieldType::kInt32);
    std::vector<FieldView> views;
    for (const auto& v : stored) views.push_back(view_of(v));
    Nvfp4MoeFields back;
    back.shared_expert = !shared;
    CHECK(parse_moe(views, &back).empty());
    CHECK(back.top_k == 8 && back.scale_layout == f.scale_layout && back.activation == f.activation &&
          back.shared_expert == shared);
    }
  }
}

// Inputs of a row-major MoE with T tokens, E experts, hidden H, intermediate I.
std::vector<std::vector<int64_t>> moe_dims(int64_t T, int64_t E, int64_t H, int64_t I, bool w4a4 = false) {
  std::vector<std::vector<int64_t>> d = {{T, H}, {T, E}, {E, 2 * I, H / 2}, {E, 2 * I, H / 16}, {E, 2},
                                         {E, H, I / 2}, {E, H, I / 16}, {E}};
  if (w4a4) {
    d.push_back({E});
    d.push_back({E});
  }
  return d;
}

void test_moe_shapes() {
  Nvfp4MoeFields f;
  f.top_k = 2;
  CHECK(check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32), f).empty());
  CHECK(check_nvfp4_moe_shapes(moe_dims(-1, 4, 64, 32), f).empty());  // dynamic T
  Nvfp4MoeFields sw = f;
  sw.scale_layout = Nvfp4ScaleLayout::kSwizzled128x4;
  sw.activation = Nvfp4Activation::kW4A4;
  auto s = moe_dims(-1, 4, 64, 32, true);
  s[kMoeGateUpScale] = {4, 128, 4};  // [2I, H/16] = [64, 4] padded to [128, 4]
  s[kMoeDownScale] = {4, 128, 4};    // [H, I/16] = [64, 2] padded to [128, 4]
  CHECK_MSG(check_nvfp4_moe_shapes(s, sw).empty(), check_nvfp4_moe_shapes(s, sw));

  std::string e = check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32, true), f);
  CHECK_MSG(starts_with(e, "inputs: expected 8 (hidden, router_logits"), e);
  e = check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32), sw);
  CHECK_MSG(starts_with(e, "inputs: expected 10") && contains(e, "down_input_scale"), e);
  Nvfp4MoeFields k5 = f;
  k5.top_k = 5;
  e = check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32), k5);
  CHECK_MSG(starts_with(e, "field 'top_k' = 5 exceeds the number of experts E = 4"), e);
  auto d = moe_dims(5, 4, 64, 32);
  d[kMoeRouterLogits] = {6, 4};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "router_logits: dim 0 must be T"), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeRouterLogits] = {5, 8};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "router_logits / gate_up_weight / down_weight: the number of experts differs"), e);
  d = moe_dims(5, 4, 40, 32);
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "hidden: H (dim 1) must be a positive multiple of 16"), e);
  d = moe_dims(5, 4, 64, 24);
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "gate_up_weight / down_weight: I must be a positive multiple of 16"), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeDownWeight] = {4, 64, 8};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "down_weight: dim 2 must be I/2 = 16"), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeDownWeight] = {4, 48, 16};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "down_weight: dim 1 must be H = 64"), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeGateUpScale] = {4, 128, 4};  // swizzled-sized under row_major
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "gate_up_weight_scale: expected [4, 64, 4] for scale_layout \"row_major\""), e);
  Nvfp4MoeFields frag = f;  // w4a16_fragments: the row-major scale shapes
  frag.scale_layout = Nvfp4ScaleLayout::kW4A16Fragments;
  CHECK(check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32), frag).empty());
  e = check_nvfp4_moe_shapes(d, frag);
  CHECK_MSG(starts_with(e, "gate_up_weight_scale: expected [4, 64, 4] for scale_layout \"w4a16_fragments\""), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeGateUpScale2] = {4};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "gate_up_weight_scale_2: expected rank 2"), e);
  d[kMoeGateUpScale2] = {4, 1};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "gate_up_weight_scale_2: expected [E, 2] = [4, 2] (gate, up)"), e);
  d = moe_dims(5, 4, 64, 32);
  d[kMoeDownScale2] = {3};
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "down_weight_scale_2: expected [E] = [4]"), e);
  s[kMoeDownInputScale] = {2};
  e = check_nvfp4_moe_shapes(s, sw);
  CHECK_MSG(starts_with(e, "down_input_scale: expected [E] = [4]"), e);
}

// The shared expert's inputs for hidden H, shared intermediate Is (row-major scales; the input
// scales with w4a4), appended to moe_dims' routed ones.
std::vector<std::vector<int64_t>> moe_shared_dims(int64_t T, int64_t E, int64_t H, int64_t I, int64_t Is,
                                                  bool w4a4 = false) {
  auto d = moe_dims(T, E, H, I, w4a4);
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{Is, H}, {Is, H}, {H, Is}}) {
    d.push_back({rows, cols / 2});
    d.push_back({rows, cols / 16});
    d.push_back({});  // weight_scale_2 as a scalar
    if (w4a4) d.push_back({1});  // input_scale as [1]
  }
  d.push_back({1, H});  // the checkpoint's shared_expert_gate.weight
  return d;
}

void test_moe_shared_shapes() {
  using L = MoeSharedLinear;
  using P = MoeSharedPart;
  Nvfp4MoeFields f;
  f.top_k = 2;
  f.shared_expert = true;
  const auto pos = [&f](L l, P p) { return nvfp4_moe_shared_pos(f, l, p); };
  CHECK_MSG(check_nvfp4_moe_shapes(moe_shared_dims(5, 4, 64, 32, 48), f).empty(),
            check_nvfp4_moe_shapes(moe_shared_dims(5, 4, 64, 32, 48), f));
  CHECK(check_nvfp4_moe_shapes(moe_shared_dims(-1, 4, 64, 32, 48), f).empty());  // dynamic T
  auto d = moe_shared_dims(5, 4, 64, 32, 48);
  d[pos(L::kGate, P::kWeightScale2)] = {1};
  d[nvfp4_moe_shared_gate_weight_pos(f)] = {64};  // [H] as well as [1, H]
  CHECK_MSG(check_nvfp4_moe_shapes(d, f).empty(), check_nvfp4_moe_shapes(d, f));

  // w4a4 with swizzled scales: 23 inputs; the scales padded per matrix.
  Nvfp4MoeFields sw = f;
  sw.scale_layout = Nvfp4ScaleLayout::kSwizzled128x4;
  sw.activation = Nvfp4Activation::kW4A4;
  auto s = moe_shared_dims(-1, 4, 64, 32, 48, true);
  s[kMoeGateUpScale] = {4, 128, 4};
  s[kMoeDownScale] = {4, 128, 4};
  for (L l : {L::kGate, L::kUp}) s[nvfp4_moe_shared_pos(sw, l, P::kWeightScale)] = {128, 4};  // [48, 4] padded
  s[nvfp4_moe_shared_pos(sw, L::kDown, P::kWeightScale)] = {128, 4};                          // [64, 3] padded
  CHECK_MSG(check_nvfp4_moe_shapes(s, sw).empty(), check_nvfp4_moe_shapes(s, sw));

  // Counts: the message lists what the fields ask for.
  std::string e = check_nvfp4_moe_shapes(moe_dims(5, 4, 64, 32), f);
  CHECK_MSG(starts_with(e, "inputs: expected 18 (hidden, router_logits, gate_up_weight, ") &&
                contains(e, "down_weight_scale_2, shared_gate_weight, shared_gate_weight_scale, "
                            "shared_gate_weight_scale_2, shared_up_weight, ") &&
                contains(e, "shared_down_weight_scale_2, shared_expert_gate_weight; activation \"w4a16\", "
                            "shared_expert 1), got 8"),
            e);
  e = check_nvfp4_moe_shapes(moe_shared_dims(5, 4, 64, 32, 48), sw);
  CHECK_MSG(starts_with(e, "inputs: expected 23 (") && contains(e, "down_input_scale, shared_gate_weight, ") &&
                contains(e, "shared_gate_weight_scale_2, shared_gate_input_scale, shared_up_weight") &&
                contains(e, "shared_down_input_scale, shared_expert_gate_weight; activation \"w4a4\", shared_expert 1)"),
            e);
  Nvfp4MoeFields no_shared = f;
  no_shared.shared_expert = false;
  e = check_nvfp4_moe_shapes(moe_shared_dims(5, 4, 64, 32, 48), no_shared);
  CHECK_MSG(starts_with(e, "inputs: expected 8 (") && contains(e, "shared_expert 0), got 18"), e);

  // Every shape mismatch, named.
  struct Case {
    L linear;
    P part;  // kWeight..kInputScale; kWeight with linear == kDown etc.
    std::vector<int64_t> dims;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {L::kGate, P::kWeight, {48, 32, 1}, "shared_gate_weight: expected rank 2, got [48, 32, 1]"},
      {L::kDown, P::kWeightScale, {64}, "shared_down_weight_scale: expected rank 2, got [64]"},
      {L::kUp, P::kWeightScale2, {2}, "shared_up_weight_scale_2: expected [] or [1] (one fp32 value), got [2]"},
      {L::kDown, P::kWeightScale2, {1, 1}, "shared_down_weight_scale_2: expected [] or [1]"},
      {L::kGate, P::kWeight, {40, 32},
       "shared_gate_weight / shared_up_weight / shared_down_weight: Is must be a positive multiple of 16, got "
       "shared_gate_weight [40, 32]"},
      {L::kGate, P::kWeight, {48, 16}, "shared_gate_weight: dim 1 must be H/2 = 32, got [48, 16]"},
      {L::kUp, P::kWeight, {64, 32}, "shared_up_weight: dim 0 must be Is = 48 (shared_gate_weight is [48, 32]), got [64, 32]"},
      {L::kUp, P::kWeight, {48, 48}, "shared_up_weight: dim 1 must be H/2 = 32, got [48, 48]"},
      {L::kDown, P::kWeight, {32, 24}, "shared_down_weight: dim 0 must be H = 64, got [32, 24]"},
      {L::kDown, P::kWeight, {64, 32}, "shared_down_weight: dim 1 must be Is/2 = 24 (shared_gate_weight is [48, 32]), got [64, 32]"},
      {L::kGate, P::kWeightScale, {128, 4},
       "shared_gate_weight_scale: expected [48, 4] for scale_layout \"row_major\" (shared_gate_weight [48, 32]), got [128, 4]"},
      {L::kUp, P::kWeightScale, {48, 8}, "shared_up_weight_scale: expected [48, 4] for scale_layout \"row_major\""},
      {L::kDown, P::kWeightScale, {64, 2}, "shared_down_weight_scale: expected [64, 3] for scale_layout \"row_major\""},
  };
  for (const Case& c : cases) {
    d = moe_shared_dims(5, 4, 64, 32, 48);
    d[pos(c.linear, c.part)] = c.dims;
    e = check_nvfp4_moe_shapes(d, f);
    CHECK_MSG(starts_with(e, c.expect), e + " / expected: " + c.expect);
  }
  const int32_t gw = nvfp4_moe_shared_gate_weight_pos(f);
  for (const auto& [dims, expect] : std::vector<std::pair<std::vector<int64_t>, std::string>>{
           {{}, "shared_expert_gate_weight: expected [H] or [1, H], got [] (a scalar)"},
           {{2, 64}, "shared_expert_gate_weight: expected [H] or [1, H], got [2, 64]"},
           {{1, 1, 64}, "shared_expert_gate_weight: expected [H] or [1, H], got [1, 1, 64]"},
           {{1, 32}, "shared_expert_gate_weight: expected [H] or [1, H] with H = 64, got [1, 32]"},
           {{128}, "shared_expert_gate_weight: expected [H] or [1, H] with H = 64, got [128]"}}) {
    d = moe_shared_dims(5, 4, 64, 32, 48);
    d[gw] = dims;
    e = check_nvfp4_moe_shapes(d, f);
    CHECK_MSG(starts_with(e, expect), e + " / expected: " + expect);
  }
  // The swizzled layout's padding and the w4a4 input scales.
  auto t = s;
  t[nvfp4_moe_shared_pos(sw, L::kDown, P::kWeightScale)] = {64, 3};  // row-major dims under swizzled_128x4
  e = check_nvfp4_moe_shapes(t, sw);
  CHECK_MSG(starts_with(e, "shared_down_weight_scale: expected [128, 4] for scale_layout \"swizzled_128x4\""), e);
  t = s;
  t[nvfp4_moe_shared_pos(sw, L::kUp, P::kInputScale)] = {4};
  e = check_nvfp4_moe_shapes(t, sw);
  CHECK_MSG(starts_with(e, "shared_up_input_scale: expected [] or [1] (one fp32 value), got [4]"), e);
  // Unknown (dynamic) dims are taken from the other tensors; the routed dims still come first.
  d = moe_shared_dims(5, 4, 64, 32, 48);
  d[pos(L::kGate, P::kWeight)] = {-1, -1};
  CHECK_MSG(check_nvfp4_moe_shapes(d, f).empty(), check_nvfp4_moe_shapes(d, f));
  d[pos(L::kUp, P::kWeight)] = {-1, 32};
  d[pos(L::kDown, P::kWeight)] = {64, 16};  // Is = 32 from down
  e = check_nvfp4_moe_shapes(d, f);
  CHECK_MSG(starts_with(e, "shared_gate_weight_scale: expected [32, 4]"), e);
}

void test_moe_dtypes() {
  Nvfp4MoeFields f;
  f.top_k = 1;
  CHECK(nvfp4_moe_dtype(kMoeHidden, f) == ElementType::kBF16);
  CHECK(nvfp4_moe_accepts(kMoeRouterLogits, ElementType::kFloat32, f));
  CHECK(nvfp4_moe_accepts(kMoeRouterLogits, ElementType::kBF16, f));
  CHECK(!nvfp4_moe_accepts(kMoeRouterLogits, ElementType::kInt32, f));
  CHECK(!nvfp4_moe_accepts(kMoeHidden, ElementType::kFloat32, f));
  for (int32_t pos : {kMoeGateUpWeight, kMoeGateUpScale, kMoeDownWeight, kMoeDownScale}) {
    CHECK(nvfp4_moe_dtype(pos, f) == ElementType::kInt8);
  }
  for (int32_t pos : {kMoeGateUpScale2, kMoeDownScale2}) CHECK(nvfp4_moe_dtype(pos, f) == ElementType::kFloat32);
  CHECK(nvfp4_moe_dtype(8, f) == ElementType::kBF16);  // out, with 8 inputs
  CHECK(std::string(nvfp4_moe_tensor_name(8, f)) == "out");
  f.activation = Nvfp4Activation::kW4A4;
  CHECK(nvfp4_moe_dtype(kMoeGateUpInputScale, f) == ElementType::kFloat32);
  CHECK(std::string(nvfp4_moe_tensor_name(kMoeDownInputScale, f)) == "down_input_scale");
  CHECK(std::string(nvfp4_moe_tensor_name(10, f)) == "out");

  // The shared expert: positions, names and dtypes after the routed inputs, the input scales only
  // with w4a4, the output after all of them.
  using L = MoeSharedLinear;
  using P = MoeSharedPart;
  for (const bool w4a4 : {false, true}) {
    Nvfp4MoeFields s;
    s.top_k = 1;
    s.activation = w4a4 ? Nvfp4Activation::kW4A4 : Nvfp4Activation::kW4A16;
    CHECK(nvfp4_moe_shared_pos(s, L::kGate, P::kWeight) == -1 && nvfp4_moe_shared_gate_weight_pos(s) == -1);
    s.shared_expert = true;
    const int32_t first = w4a4 ? 10 : 8, per = w4a4 ? 4 : 3;
    const char* const linears[] = {"gate", "up", "down"};
    const char* const parts[] = {"weight", "weight_scale", "weight_scale_2", "input_scale"};
    for (int32_t l = 0; l < 3; ++l) {
      for (int32_t p = 0; p < 4; ++p) {
        const int32_t at = nvfp4_moe_shared_pos(s, static_cast<L>(l), static_cast<P>(p));
        if (p == 3 && !w4a4) {
          CHECK(at == -1);
          continue;
        }
        CHECK(at == first + l * per + p);
        CHECK_MSG(std::string(nvfp4_moe_tensor_name(at, s)) == std::string("shared_") + linears[l] + "_" + parts[p],
                  nvfp4_moe_tensor_name(at, s));
        CHECK(nvfp4_moe_dtype(at, s) == (p < 2 ? ElementType::kInt8 : ElementType::kFloat32));
        CHECK(!nvfp4_moe_accepts(at, p < 2 ? ElementType::kBF16 : ElementType::kInt8, s));
      }
    }
    const int32_t gw = nvfp4_moe_shared_gate_weight_pos(s);
    CHECK(gw == first + 3 * per && gw == nvfp4_moe_inputs(s) - 1);
    CHECK(std::string(nvfp4_moe_tensor_name(gw, s)) == "shared_expert_gate_weight");
    CHECK(nvfp4_moe_dtype(gw, s) == ElementType::kBF16 && !nvfp4_moe_accepts(gw, ElementType::kFloat32, s));
    CHECK(std::string(nvfp4_moe_tensor_name(gw + 1, s)) == "out" && nvfp4_moe_dtype(gw + 1, s) == ElementType::kBF16);
    CHECK(std::string(nvfp4_moe_tensor_name(gw + 2, s)) == "?");
    // The count message: what the fields ask for, and the output.
    CHECK(nvfp4_moe_counts_error(s, nvfp4_moe_inputs(s), 1).empty());
    const std::string e = nvfp4_moe_counts_error(s, first, 1);
    CHECK_MSG(starts_with(e, "expected " + std::to_string(first + 3 * per + 1) + " inputs (hidden, ") &&
                  contains(e, "shared_expert 1) and 1 output (out), got " + std::to_string(first) + " and 1"),
              e);
  }
}

// --- Qwen35GatedAttention -------------------------------------------------------------------------

// Qwen3.5-35B-A3B's attention: 16 query heads, 2 kv heads, head_dim 256, partial RoPE on 64 dims.
struct AttnValues {
  int32_t num_heads = 16, num_kv_heads = 2, head_dim = 256, rotary_dim = 64;
  float rope_theta = 1.0e7f, eps = 1.0e-6f;
};

// The six required fields as the ONNX parser hands them over (views into `v`).
std::vector<FieldView> attn_views(const AttnValues& v) {
  return {{"num_heads", FieldType::kInt32, &v.num_heads, 1},   {"num_kv_heads", FieldType::kInt32, &v.num_kv_heads, 1},
          {"head_dim", FieldType::kInt32, &v.head_dim, 1},     {"rotary_dim", FieldType::kInt32, &v.rotary_dim, 1},
          {"rope_theta", FieldType::kFloat32, &v.rope_theta, 1}, {"eps", FieldType::kFloat32, &v.eps, 1}};
}

// `views` with the field `name` replaced by `field` (removed when field.name is null).
std::vector<FieldView> with(std::vector<FieldView> views, const std::string& name, FieldView field) {
  for (auto it = views.begin(); it != views.end(); ++it) {
    if (name == it->name) {
      if (field.name == nullptr) {
        views.erase(it);
      } else {
        *it = field;
      }
      return views;
    }
  }
  if (field.name != nullptr) views.push_back(field);
  return views;
}

std::string parse_attn(const std::vector<FieldView>& fields, GatedAttentionFields* out = nullptr) {
  GatedAttentionFields scratch;
  return parse_gated_attention_fields(fields, out != nullptr ? out : &scratch);
}

void test_attention_fields() {
  const AttnValues v;
  GatedAttentionFields f;
  CHECK(parse_attn(attn_views(v), &f).empty());
  CHECK(f.num_heads == 16 && f.num_kv_heads == 2 && f.head_dim == 256 && f.rotary_dim == 64);
  CHECK(f.rope_theta == 1.0e7f && f.eps == 1.0e-6f);
  CHECK(f.scale == 0.0625f);  // the default: 256 ** -0.5
  CHECK(gated_attention_default_scale(128) == static_cast<float>(0.08838834764831845));  // Python's 128 ** -0.5
  CHECK(gated_attention_default_scale(32) == static_cast<float>(0.17677669529663687));

  const float half = 0.5f, zero = 0.0f, neg = -1.0f, inf = 1.0f / 0.0f, nan = std::nanf("");
  const int32_t one = 1, two = 2, three = 3, zero_i = 0, big = 65536, hd48 = 48, hd288 = 288, odd = 63, r258 = 258;
  const int64_t sixteen64 = 16;
  CHECK(parse_attn(with(attn_views(v), "scale", {"scale", FieldType::kFloat32, &half, 1}), &f).empty() && f.scale == 0.5f);
  // eps = 0 is valid (the closed lower bound), rotary_dim 0 (no RoPE) and = head_dim (full RoPE) too.
  CHECK(parse_attn(with(attn_views(v), "eps", {"eps", FieldType::kFloat32, &zero, 1}), &f).empty() && f.eps == 0.0f);
  CHECK(parse_attn(with(attn_views(v), "rotary_dim", {"rotary_dim", FieldType::kInt32, &zero_i, 1}), &f).empty());
  CHECK(parse_attn(with(attn_views(v), "rotary_dim", {"rotary_dim", FieldType::kInt32, &v.head_dim, 1}), &f).empty());
  // MHA (nkv = nh), a producer that keeps ONNX's 64-bit ints.
  CHECK(parse_attn(with(attn_views(v), "num_kv_heads", {"num_kv_heads", FieldType::kInt64, &sixteen64, 1}), &f).empty() &&
        f.num_kv_heads == 16);

  struct Case {
    std::string name;
    FieldView field;  // name null: the field is missing
    std::string expect;
  };
  const std::vector<Case> cases = {
      // Missing: each required field.
      {"num_heads", {}, "field 'num_heads': missing (expected one integer (INT32) in [1, 65535])"},
      {"num_kv_heads", {}, "field 'num_kv_heads': missing (expected one integer (INT32) in [1, 16])"},
      {"head_dim", {}, "field 'head_dim': missing (expected one integer (INT32) in [32, 256])"},
      {"rotary_dim", {}, "field 'rotary_dim': missing (expected one integer (INT32) in [0, 256])"},
      {"rope_theta", {}, "field 'rope_theta': missing (expected one finite float (FLOAT32) in (0, inf))"},
      {"eps", {}, "field 'eps': missing (expected one finite float (FLOAT32) in [0, inf))"},
      // Wrong type or length.
      {"num_heads", {"num_heads", FieldType::kFloat32, &half, 1}, "field 'num_heads': expected one integer (INT32) in [1, 65535], got FLOAT32"},
      {"num_kv_heads", {"num_kv_heads", FieldType::kChar, "2", 2}, "field 'num_kv_heads': expected one integer (INT32) in [1, 16], got CHAR"},
      {"head_dim", {"head_dim", FieldType::kInt32, &v.head_dim, 2}, "field 'head_dim': expected one integer (INT32) in [32, 256], got 2 values"},
      {"rotary_dim", {"rotary_dim", FieldType::kFloat32, &half, 1}, "field 'rotary_dim': expected one integer (INT32) in [0, 256], got FLOAT32"},
      {"rope_theta", {"rope_theta", FieldType::kInt32, &one, 1}, "field 'rope_theta': expected one finite float (FLOAT32) in (0, inf), got INT32"},
      {"eps", {"eps", FieldType::kInt32, &zero_i, 1}, "field 'eps': expected one finite float (FLOAT32) in [0, inf), got INT32"},
      {"scale", {"scale", FieldType::kInt32, &one, 1}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got INT32"},
      {"scale", {"scale", FieldType::kFloat32, &half, 0}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got 0 values"},
      // Out of range.
      {"num_heads", {"num_heads", FieldType::kInt32, &zero_i, 1}, "field 'num_heads': expected one integer (INT32) in [1, 65535], got 0"},
      {"num_heads", {"num_heads", FieldType::kInt32, &big, 1}, "field 'num_heads': expected one integer (INT32) in [1, 65535], got 65536"},
      {"num_kv_heads", {"num_kv_heads", FieldType::kInt32, &zero_i, 1}, "field 'num_kv_heads': expected one integer (INT32) in [1, 16], got 0"},
      {"num_kv_heads", {"num_kv_heads", FieldType::kInt32, &big, 1}, "field 'num_kv_heads': expected one integer (INT32) in [1, 16], got 65536"},
      {"num_kv_heads", {"num_kv_heads", FieldType::kInt32, &three, 1}, "field 'num_kv_heads': must divide num_heads = 16, got 3"},
      {"head_dim", {"head_dim", FieldType::kInt32, &hd48, 1}, "field 'head_dim': expected a multiple of 32 in [32, 256]"},
      {"head_dim", {"head_dim", FieldType::kInt32, &hd288, 1}, "field 'head_dim': expected one integer (INT32) in [32, 256], got 288"},
      {"head_dim", {"head_dim", FieldType::kInt32, &two, 1}, "field 'head_dim': expected one integer (INT32) in [32, 256], got 2"},
      {"rotary_dim", {"rotary_dim", FieldType::kInt32, &odd, 1}, "field 'rotary_dim': expected an even integer in [0, head_dim = 256]"},
      {"rotary_dim", {"rotary_dim", FieldType::kInt32, &r258, 1}, "field 'rotary_dim': expected one integer (INT32) in [0, 256], got 258"},
      {"rope_theta", {"rope_theta", FieldType::kFloat32, &zero, 1}, "field 'rope_theta': expected one finite float (FLOAT32) in (0, inf), got 0"},
      {"rope_theta", {"rope_theta", FieldType::kFloat32, &neg, 1}, "field 'rope_theta'" /* ... got -1 */},
      {"rope_theta", {"rope_theta", FieldType::kFloat32, &inf, 1}, "field 'rope_theta': expected one finite float (FLOAT32) in (0, inf), got inf"},
      {"eps", {"eps", FieldType::kFloat32, &neg, 1}, "field 'eps': expected one finite float (FLOAT32) in [0, inf), got -1"},
      {"eps", {"eps", FieldType::kFloat32, &nan, 1}, "field 'eps': expected one finite float (FLOAT32) in [0, inf), got nan"},
      {"scale", {"scale", FieldType::kFloat32, &zero, 1}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got 0"},
      {"scale", {"scale", FieldType::kFloat32, &neg, 1}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got -1"},
      {"scale", {"scale", FieldType::kFloat32, &inf, 1}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got inf"},
      // Unknown.
      {"block_size", {"block_size", FieldType::kInt32, &one, 1},
       "field 'block_size': unknown (expected only: num_heads, num_kv_heads, head_dim, rotary_dim, rope_theta, eps, scale)"},
  };
  for (const Case& c : cases) {
    const std::string e = parse_attn(with(attn_views(v), c.name, c.field));
    CHECK_MSG(starts_with(e, c.expect), "got: " + e + "; expected: " + c.expect);
  }
  // The range of num_kv_heads follows num_heads; a duplicate is named.
  const int32_t four = 4;
  std::string e = parse_attn(with(with(attn_views(v), "num_heads", {"num_heads", FieldType::kInt32, &four, 1}),
                                  "num_kv_heads", {"num_kv_heads", FieldType::kInt32, &big, 1}));
  CHECK_MSG(starts_with(e, "field 'num_kv_heads': expected one integer (INT32) in [1, 4], got 65536"), e);
  auto dup = attn_views(v);
  dup.push_back({"eps", FieldType::kFloat32, &half, 1});
  e = parse_attn(dup);
  CHECK_MSG(starts_with(e, "field 'eps': given more than once"), e);
}

void test_attention_schema_and_serialisation() {
  const std::vector<FieldValue> schema = gated_attention_field_schema();
  const char* const names[] = {"num_heads", "num_kv_heads", "head_dim", "rotary_dim", "rope_theta", "eps", "scale"};
  CHECK(schema.size() == 7);
  for (size_t i = 0; i < schema.size() && i < 7; ++i) {
    CHECK_MSG(schema[i].name == names[i] && schema[i].type == (i < 4 ? FieldType::kInt32 : FieldType::kFloat32) &&
                  schema[i].length == 1,
              schema[i].name);
  }

  // Absent scale: resolved at parse time and serialised explicitly; a given scale unchanged.
  const AttnValues v;
  const float given = 0.125f, zero = 0.0f;
  for (const bool has_scale : {false, true}) {
    auto views = attn_views(v);
    if (has_scale) {
      views.push_back({"scale", FieldType::kFloat32, &given, 1});
      views = with(views, "eps", {"eps", FieldType::kFloat32, &zero, 1});
    }
    GatedAttentionFields in;
    CHECK(parse_attn(views, &in).empty());
    const std::vector<FieldValue> stored = serialize_gated_attention_fields(in);
    CHECK(stored.size() == 7);
    CHECK(stored.back().name == "scale" && stored.back().type == FieldType::kFloat32);
    std::vector<FieldView> back_views;
    for (const FieldValue& s : stored) back_views.push_back(view_of(s));
    GatedAttentionFields out;
    CHECK(parse_attn(back_views, &out).empty());
    CHECK(out.num_heads == in.num_heads && out.num_kv_heads == in.num_kv_heads && out.head_dim == in.head_dim &&
          out.rotary_dim == in.rotary_dim && out.rope_theta == in.rope_theta && out.eps == in.eps &&
          out.scale == in.scale);
    CHECK(out.scale == (has_scale ? 0.125f : 0.0625f));
    CHECK(out.eps == (has_scale ? 0.0f : 1.0e-6f));
  }
}

// qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, cu_seqlens, context_lens for
// T tokens, B sequences, N blocks of bs tokens, M blocks per sequence (-1: unknown).
std::vector<std::vector<int64_t>> attn_dims(int64_t T, int64_t B, int64_t N, int64_t bs, int64_t M, int64_t nh = 16,
                                            int64_t nkv = 2, int64_t hd = 256) {
  return {{T, nh * 2 * hd}, {T, nkv * hd}, {T, nkv * hd}, {hd}, {hd}, {N, 2, nkv, bs, hd}, {B, M},
          {B < 0 ? -1 : B + 1}, {B}};
}

GatedAttentionFields attn_fields(int32_t nh = 16, int32_t nkv = 2, int32_t hd = 256) {
  GatedAttentionFields f;
  f.num_heads = nh;
  f.num_kv_heads = nkv;
  f.head_dim = hd;
  f.rotary_dim = hd / 4;
  f.rope_theta = 1.0e7f;
  f.eps = 1.0e-6f;
  f.scale = gated_attention_default_scale(hd);
  return f;
}

void test_attention_shapes() {
  const GatedAttentionFields f = attn_fields();
  CHECK(check_gated_attention_shapes(attn_dims(10, 2, 64, 16, 8), f).empty());
  CHECK(check_gated_attention_shapes(attn_dims(-1, -1, -1, 16, -1), f).empty());  // build time: T, B, blocks dynamic
  CHECK(check_gated_attention_shapes(attn_dims(3, 3, 1, 1, 1), f).empty());       // decode step, one-token blocks
  std::vector<std::vector<int64_t>> unknown = {{-1, -1}, {-1, -1}, {-1, -1}, {-1}, {-1}, {-1, -1, -1, -1, -1},
                                               {-1, -1}, {-1},     {-1}};
  CHECK(check_gated_attention_shapes(unknown, f).empty());
  CHECK(check_gated_attention_shapes(attn_dims(5, 2, 4, 32, 2, 8, 8, 128), attn_fields(8, 8, 128)).empty());  // MHA

  struct Case {
    int32_t input;
    std::vector<int64_t> dims;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {kAttnQg, {10, 8192, 1}, "qg: expected rank 2, got [10, 8192, 1]"},
      {kAttnKvPool, {64, 2, 2, 16 * 256}, "kv_pool: expected rank 5"},
      {kAttnBlockTables, {2}, "block_tables: expected rank 2"},
      {kAttnContextLens, {2, 1}, "context_lens: expected rank 1"},
      {kAttnK, {9, 512}, "k: dim 0 (tokens) must equal qg's 10, got [9, 512]"},
      {kAttnV, {11, 512}, "v: dim 0 (tokens) must equal qg's 10, got [11, 512]"},
      {kAttnQg, {10, 4096}, "qg: dim 1 must be num_heads * 2 * head_dim = 8192 (query and gate of each head), got [10, 4096]"},
      {kAttnK, {10, 256}, "k: dim 1 must be num_kv_heads * head_dim = 512, got [10, 256]"},
      {kAttnV, {10, 1024}, "v: dim 1 must be num_kv_heads * head_dim = 512, got [10, 1024]"},
      {kAttnQNormWeight, {128}, "q_norm_weight: must have head_dim = 256 entries, got [128]"},
      {kAttnKNormWeight, {512}, "k_norm_weight: must have head_dim = 256 entries, got [512]"},
      {kAttnKvPool, {64, 1, 2, 16, 256}, "kv_pool: must be [num_blocks, 2, num_kv_heads, block_size, head_dim] = [num_blocks, 2, 2, block_size, 256], got [64, 1, 2, 16, 256]"},
      {kAttnKvPool, {64, 2, 4, 16, 256}, "kv_pool: must be [num_blocks, 2, num_kv_heads, block_size, head_dim]"},
      {kAttnKvPool, {64, 2, 2, 16, 128}, "kv_pool: must be [num_blocks, 2, num_kv_heads, block_size, head_dim]"},
      {kAttnKvPool, {0, 2, 2, 16, 256}, "kv_pool: num_blocks (dim 0) must be at least 1"},
      {kAttnKvPool, {64, 2, 2, 0, 256}, "kv_pool: block_size (dim 3) must be at least 1"},
      {kAttnBlockTables, {2, 0}, "block_tables: max_blocks_per_seq (dim 1) must be at least 1"},
      {kAttnContextLens, {3}, "context_lens: must have one entry per sequence (block_tables has B = 2 rows), got [3]"},
      {kAttnCuSeqlens, {2}, "cu_seqlens: must have B + 1 = 3 entries, got [2]"},
      {kAttnCuSeqlens, {4}, "cu_seqlens: must have B + 1 = 3 entries, got [4]"},
  };
  for (const Case& c : cases) {
    auto d = attn_dims(10, 2, 64, 16, 8);
    d[c.input] = c.dims;
    const std::string e = check_gated_attention_shapes(d, f);
    CHECK_MSG(starts_with(e, c.expect), "got: " + e + "; expected: " + c.expect);
  }
  auto d = attn_dims(10, 2, 64, 16, 8);
  d.pop_back();
  std::string e = check_gated_attention_shapes(d, f);
  CHECK_MSG(starts_with(e, "inputs: expected 9 (qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, "
                           "cu_seqlens, context_lens), got 8"),
            e);
  // B from whichever tensor knows it: context_lens against cu_seqlens when block_tables' B is dynamic.
  d = attn_dims(10, 2, 64, 16, 8);
  d[kAttnBlockTables] = {-1, 8};
  d[kAttnCuSeqlens] = {4};
  e = check_gated_attention_shapes(d, f);
  CHECK_MSG(starts_with(e, "cu_seqlens: must have B + 1 = 3 entries, got [4]"), e);
  e = check_gated_attention_shapes(attn_dims(10, 0, 64, 16, 8), f);
  CHECK_MSG(starts_with(e, "block_tables: B (dim 0) must be at least 1"), e);
  d = attn_dims(10, -1, 64, 16, 8);
  d[kAttnCuSeqlens] = {1};  // B = 0 known from cu_seqlens alone
  e = check_gated_attention_shapes(d, f);
  CHECK_MSG(starts_with(e, "block_tables: B (dim 0) must be at least 1"), e);
  e = check_gated_attention_shapes(attn_dims(2, 3, 64, 16, 8), f);
  CHECK_MSG(starts_with(e, "qg: T (dim 0) must be >= B (every sequence has a new token), got T = 2, B = 3"), e);
  // T known only from k: still checked against B.
  d = attn_dims(2, 3, 64, 16, 8);
  d[kAttnQg][0] = -1;
  d[kAttnV][0] = -1;
  e = check_gated_attention_shapes(d, f);
  CHECK_MSG(starts_with(e, "qg: T (dim 0) must be >= B"), e);
}

void test_attention_dtypes_and_aliasing() {
  for (int32_t pos = 0; pos < kGatedAttentionInputs + kGatedAttentionOutputs; ++pos) {
    const ElementType want = pos == kAttnBlockTables || pos == kAttnCuSeqlens || pos == kAttnContextLens
                                 ? ElementType::kInt32
                                 : ElementType::kBF16;
    CHECK_MSG(gated_attention_dtype(pos) == want, gated_attention_tensor_name(pos));
  }
  CHECK(std::string(gated_attention_tensor_name(kAttnQg)) == "qg");
  CHECK(std::string(gated_attention_tensor_name(kAttnContextLens)) == "context_lens");
  CHECK(std::string(gated_attention_tensor_name(kAttnOut)) == "out");
  CHECK(std::string(gated_attention_tensor_name(kAttnKvPoolOut)) == "kv_pool (output)");
  CHECK(std::string(gated_attention_tensor_name(11)) == "?");
  CHECK(gated_attention_aliased_input(0) == -1);
  CHECK(gated_attention_aliased_input(1) == kAttnKvPool);
  CHECK(gated_attention_aliased_input(2) == -1);
  CHECK(gated_attention_out_width(attn_fields()) == 16 * 256);
  CHECK(gated_attention_out_width(attn_fields(32, 4, 128)) == 32 * 128);
  CHECK(std::string(kGatedAttentionName) == "Qwen35GatedAttention");
}

// --- Workspace alignment (every plugin with a workspace) -----------------------------------------

void test_workspace_rules() {
  CHECK(padded_workspace_bytes(0) == 0);
  CHECK(padded_workspace_bytes(1) == 1 + kWorkspaceAlignment);
  CHECK(aligned_workspace(nullptr) == nullptr);
  alignas(256) static unsigned char buffer[1024];
  for (std::size_t offset : {0, 1, 16, 255, 256}) {
    const auto a = reinterpret_cast<std::uintptr_t>(aligned_workspace(buffer + offset));
    const auto base = reinterpret_cast<std::uintptr_t>(buffer + offset);
    CHECK(a % kWorkspaceAlignment == 0 && a >= base && a - base < kWorkspaceAlignment);
  }
}

}  // namespace

int main() {
  test_fields();
  test_schema_and_serialisation();
  test_shapes();
  test_dtypes_and_aliasing();
  test_gdn_fields();
  test_gdn_schema_and_serialisation();
  test_gdn_shapes();
  test_gdn_form_and_workspace();
  test_gdn_dtypes_and_aliasing();
  test_linear_fields();
  test_linear_schema_and_serialisation();
  test_linear_shapes();
  test_linear_dtypes_and_workspace();
  test_moe_fields();
  test_moe_schema_and_serialisation();
  test_moe_shapes();
  test_moe_shared_shapes();
  test_moe_dtypes();
  test_attention_fields();
  test_attention_schema_and_serialisation();
  test_attention_shapes();
  test_attention_dtypes_and_aliasing();
  test_workspace_rules();
  return qwen35_trt::test::report();
}
