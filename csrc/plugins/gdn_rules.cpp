// The GatedDeltaNet plugin's contract in plain C++ (see gdn_rules.h).
#include "gdn_rules.h"

#include <cmath>
#include <cstdint>

#include "shape_rules.h"

namespace qwen35_trt::plugins {
namespace {

const char* const kScale = "scale";
const char* const kUseQkL2norm = "use_qk_l2norm";
const char* const kAlgorithm = "algorithm";

}  // namespace

ElementType gated_delta_net_dtype(int32_t pos) {
  switch (pos) {
    case kGdnALog:
    case kGdnDtBias:
    case kGdnStatePool:
    case kGdnStatePoolOut: return ElementType::kFloat32;
    case kGdnSlots:
    case kGdnCuSeqlens: return ElementType::kInt32;
    case kGdnHasInitialState: return ElementType::kBool;
    default: return ElementType::kBF16;
  }
}

const char* gated_delta_net_tensor_name(int32_t pos) {
  static const char* const names[] = {"q",     "k",          "v",
                                      "a",     "b",          "A_log",
                                      "dt_bias", "state_pool", "slots",
                                      "cu_seqlens", "has_initial_state", "o",
                                      "state_pool (output)"};
  return pos >= 0 && pos < kGatedDeltaNetInputs + kGatedDeltaNetOutputs ? names[pos] : "?";
}

int32_t gated_delta_net_output_shape_source(int32_t output) {
  return output == 0 ? kGdnV : output == 1 ? kGdnStatePool : -1;
}

int32_t gated_delta_net_aliased_input(int32_t output) { return output == 1 ? kGdnStatePool : -1; }

const char* gdn_algorithm_name(GdnAlgorithm a) {
  switch (a) {
    case GdnAlgorithm::kAuto: return "auto";
    case GdnAlgorithm::kChunked: return "chunked";
    case GdnAlgorithm::kRecurrent: return "recurrent";
  }
  return "?";
}

float gated_delta_net_scale(const GatedDeltaNetFields& fields, int64_t head_k_dim) {
  if (fields.has_scale) return fields.scale;
  return head_k_dim > 0 ? 1.0f / std::sqrt(static_cast<float>(head_k_dim)) : 0.0f;
}

std::vector<FieldValue> gated_delta_net_field_schema() {
  FieldValue scale;
  scale.name = kScale;
  scale.type = FieldType::kFloat32;
  scale.length = 1;
  FieldValue norm;
  norm.name = kUseQkL2norm;
  norm.type = FieldType::kInt32;
  norm.length = 1;
  FieldValue algorithm;
  algorithm.name = kAlgorithm;
  algorithm.type = FieldType::kChar;
  algorithm.length = 0;  // variable
  return {scale, norm, algorithm};
}

std::string parse_gated_delta_net_fields(const std::vector<FieldView>& fields, GatedDeltaNetFields* out) {
  std::string e = check_known_fields(fields, {kScale, kUseQkL2norm, kAlgorithm});
  if (!e.empty()) return e;
  GatedDeltaNetFields parsed;
  const FieldView* scale = find_field(fields, kScale, &e);
  if (!e.empty()) return e;
  if (scale != nullptr) {
    // Upper bound: anything near FLT_MAX would overflow q * scale; no model comes close to 1e6.
    e = read_float_field(*scale, 0.0, 1.0e6, &parsed.scale);
    if (!e.empty()) return e;
    parsed.has_scale = true;
  }
  const FieldView* norm = find_field(fields, kUseQkL2norm, &e);
  if (!e.empty()) return e;
  if (norm != nullptr) {
    int64_t v = 0;
    e = read_int_field(*norm, 0, 1, &v);
    if (!e.empty()) return e;
    parsed.use_qk_l2norm = static_cast<int32_t>(v);
  }
  const FieldView* algorithm = find_field(fields, kAlgorithm, &e);
  if (!e.empty()) return e;
  if (algorithm != nullptr) {
    std::string name;
    e = read_string_field(*algorithm, {"auto", "chunked", "recurrent"}, &name);
    if (!e.empty()) return e;
    parsed.algorithm = name == "chunked"     ? GdnAlgorithm::kChunked
                       : name == "recurrent" ? GdnAlgorithm::kRecurrent
                                             : GdnAlgorithm::kAuto;
  }
  *out = parsed;
  return "";
}

std::vector<FieldValue> serialize_gated_delta_net_fields(const GatedDeltaNetFields& fields) {
  std::vector<FieldValue> out;
  if (fields.has_scale) out.push_back(FieldValue::float32(kScale, fields.scale));
  out.push_back(FieldValue::int32(kUseQkL2norm, fields.use_qk_l2norm));
  out.push_back(FieldValue::string(kAlgorithm, gdn_algorithm_name(fields.algorithm)));
  return out;
}

std::string check_gated_delta_net_shapes(const std::vector<std::vector<int64_t>>& in,
                                         const GatedDeltaNetFields& f) {
  if (static_cast<int32_t>(in.size()) != kGatedDeltaNetInputs) {
    return "inputs: expected 11 (q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, "
           "has_initial_state), got " +
           std::to_string(in.size());
  }
  static const size_t ranks[] = {3, 3, 3, 2, 2, 1, 1, 4, 1, 1, 1};
  for (int32_t i = 0; i < kGatedDeltaNetInputs; ++i) {
    if (in[i].size() != ranks[i]) {
      return std::string(gated_delta_net_tensor_name(i)) + ": expected rank " + std::to_string(ranks[i]) +
             ", got " + dims_str(in[i]);
    }
  }
  const auto& q = in[kGdnQ];
  const auto& k = in[kGdnK];
  const auto& v = in[kGdnV];
  const auto& a = in[kGdnA];
  const auto& b = in[kGdnB];
  const auto& pool = in[kGdnStatePool];

  const int64_t tokens = first_known({q[0], k[0], v[0], a[0], b[0]});
  for (int32_t i : {kGdnK, kGdnV, kGdnA, kGdnB}) {
    if (conflict(in[i][0], tokens)) {
      return std::string(gated_delta_net_tensor_name(i)) + ": dim 0 (tokens) must equal q's " +
             std::to_string(tokens) + ", got " + dims_str(in[i]);
    }
  }
  if (conflict(k[1], q[1]) || conflict(k[2], q[2])) {
    return "k: must have q's [T, Hk, dk], got q " + dims_str(q) + ", k " + dims_str(k);
  }
  const int64_t hk = first_known({q[1], k[1]});
  const int64_t dk = first_known({q[2], k[2], pool[2]});
  const int64_t hv = first_known({v[1], a[1], b[1], in[kGdnALog][0], in[kGdnDtBias][0], pool[1]});
  const int64_t dv = first_known({v[2], pool[3]});
  for (int32_t i : {kGdnA, kGdnB}) {
    if (conflict(in[i][1], hv)) {
      return std::string(gated_delta_net_tensor_name(i)) + ": dim 1 must be Hv = " + std::to_string(hv) +
             " (v dim 1), got " + dims_str(in[i]);
    }
  }
  for (int32_t i : {kGdnALog, kGdnDtBias}) {
    if (conflict(in[i][0], hv)) {
      return std::string(gated_delta_net_tensor_name(i)) + ": must have Hv = " + std::to_string(hv) +
             " entries, got " + dims_str(in[i]);
    }
  }
  if (conflict(v[1], hv)) return "v: dim 1 must be Hv = " + std::to_string(hv) + ", got " + dims_str(v);
  if (conflict(pool[1], hv) || conflict(pool[2], dk) || conflict(pool[3], dv)) {
    return "state_pool: must be [num_slots, Hv, dk, dv] = [num_slots, " + std::to_string(hv) + ", " +
           std::to_string(dk) + ", " + std::to_string(dv) + "], got " + dims_str(pool);
  }
  if (conflict(q[2], dk) || conflict(v[2], dv)) {
    return "q / v: head dims differ from state_pool's: q " + dims_str(q) + ", v " + dims_str(v) + ", state_pool " +
           dims_str(pool);
  }
  if (hk == 0 || (hk > 0 && hv >= 0 && hv % hk != 0)) {
    return "v: Hv (dim 1) must be a positive multiple of Hk (q dim 1) = " + std::to_string(hk) + ", got " +
           std::to_string(hv);
  }
  if (hv == 0 || hv > 65535) return "v: Hv (dim 1) must be in [1, 65535], got " + std::to_string(hv);
  if (dv >= 0 && (dv == 0 || dv % 32 != 0)) {
    return "v: dv (dim 2) must be a positive multiple of 32, got " + std::to_string(dv);
  }
  if (dk >= 0 && dk != 32 && dk != 64 && dk != 128 && dk != 256) {
    return "q: dk (dim 2) must be 32, 64, 128 or 256 (the recurrent kernel), got " + std::to_string(dk);
  }
  if (f.algorithm == GdnAlgorithm::kChunked && dk >= 0 && dk != 64 && dk != 128) {
    return "q: dk (dim 2) must be 64 or 128 with field algorithm = \"chunked\", got " + std::to_string(dk);
  }
  const int64_t batch = in[kGdnSlots][0];
  if (batch == 0 || batch > 65535) return "slots: B must be in [1, 65535], got " + std::to_string(batch);
  if (conflict(in[kGdnHasInitialState][0], batch)) {
    return "has_initial_state: must have one entry per sequence (slots has " + std::to_string(batch) + "), got " +
           dims_str(in[kGdnHasInitialState]);
  }
  if (batch >= 0 && conflict(in[kGdnCuSeqlens][0], batch + 1)) {
    return "cu_seqlens: must have B + 1 = " + std::to_string(batch + 1) + " entries, got " +
           dims_str(in[kGdnCuSeqlens]);
  }
  if (batch >= 0 && tokens >= 0 && tokens < batch) {
    return "q: T (dim 0) must be >= B (every sequence has a token), got T = " + std::to_string(tokens) +
           ", B = " + std::to_string(batch);
  }
  return "";
}

std::string choose_gated_delta_net_form(const GatedDeltaNetFields& f, int64_t tokens, int64_t batch,
                                        int64_t head_k_dim, std::size_t chunked_shared_bytes,
                                        int64_t device_shared_optin, GdnForm* form) {
  const bool fits = chunked_shared_bytes > 0 && device_shared_optin >= 0 &&
                    chunked_shared_bytes <= static_cast<std::size_t>(device_shared_optin);
  switch (f.algorithm) {
    case GdnAlgorithm::kRecurrent: *form = GdnForm::kRecurrent; return "";
    case GdnAlgorithm::kChunked:
      if (!fits) {
        return "field 'algorithm': \"chunked\" needs " + std::to_string(chunked_shared_bytes) +
               " bytes of shared memory per block for dk = " + std::to_string(head_k_dim) + ", this device allows " +
               std::to_string(device_shared_optin) + "; use \"auto\" or \"recurrent\"";
      }
      *form = GdnForm::kChunked;
      return "";
    case GdnAlgorithm::kAuto: break;
  }
  *form = tokens != batch && (head_k_dim == 64 || head_k_dim == 128) && fits ? GdnForm::kChunked : GdnForm::kRecurrent;
  return "";
}

bool gated_delta_net_may_run_chunked(const GatedDeltaNetFields& f, int64_t head_k_dim) {
  if (f.algorithm == GdnAlgorithm::kRecurrent) return false;
  return head_k_dim < 0 || head_k_dim == 64 || head_k_dim == 128;
}

std::size_t gated_delta_net_workspace_bytes(bool may_run_chunked, std::size_t chunked_bytes) {
  return may_run_chunked ? padded_workspace_bytes(chunked_bytes) : 0;
}

void* gated_delta_net_aligned_workspace(void* workspace) { return aligned_workspace(workspace); }

}  // namespace qwen35_trt::plugins
