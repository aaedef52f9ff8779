// The Nvfp4Linear plugin's contract in plain C++ (docs/ops.md "Nvfp4Linear", docs/plugins.md):
// name, fields, tensor positions, dtypes, shape rules, workspace and serialisation. The TensorRT
// adapter (nvfp4_linear_plugin.cpp) only translates to and from these; ctest covers them without
// TensorRT (csrc/tests/test_plugin_rules.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "field_rules.h"
#include "plugin_types.h"
#include "workspace_rules.h"

namespace qwen35_trt::plugins {

inline constexpr const char* kNvfp4LinearName = "Qwen35Nvfp4Linear";

// Tensor positions. `input_scale` exists only with activation "w4a4", so the output's position
// is the input count (4 or 5): nvfp4_linear_inputs(fields).
enum Nvfp4LinearPos : int32_t {
  kLinX = 0,             // [T, K] bf16
  kLinWeight = 1,        // [N, K/2] int8 carrying bytes: E2M1 pairs, low nibble = even column (row_major,
                         // swizzled_128x4), or each 64-code group in MMA fragment order (w4a16_fragments)
  kLinWeightScale = 2,   // int8 carrying scale bytes: [N, K/16] E4M3 (row_major) or UE5M3 (w4a16_fragments),
                         // or [roundup(N,128), roundup(K/16,4)] E4M3 (swizzled_128x4)
  kLinWeightScale2 = 3,  // [] or [1] fp32
  kLinInputScale = 4,    // [] or [1] fp32, w4a4 only
};
inline constexpr int32_t kNvfp4LinearOutputs = 1;

enum class Nvfp4ScaleLayout { kRowMajor, kSwizzled128x4, kW4A16Fragments };
enum class Nvfp4Activation { kW4A16, kW4A4 };

// Fields (= ONNX node attributes):
//   scale_layout  STRING, required, "row_major" | "swizzled_128x4" | "w4a16_fragments": how the
//                 weight is stored. "w4a16_fragments" covers the codes too: each 64-code group of
//                 a row in MMA fragment order, UE5M3 scales [N, K/16]
//                 (qwen35_trt/common/w4a16_fragments.h). Required: the layouts have the same size
//                 when N % 128 == 0 and K % 64 == 0, so a default could silently read the weights
//                 in the wrong order.
//   activation    STRING, optional (default "w4a16"), "w4a16" | "w4a4": w4a4 adds the input
//                 `input_scale` (what the sm_100 native path quantizes activations with); it is
//                 refused with "w4a16_fragments", a layout only the W4A16 GEMM reads.
struct Nvfp4LinearFields {
  Nvfp4ScaleLayout scale_layout = Nvfp4ScaleLayout::kRowMajor;
  Nvfp4Activation activation = Nvfp4Activation::kW4A16;
};

const char* nvfp4_scale_layout_name(Nvfp4ScaleLayout layout);
const char* nvfp4_activation_name(Nvfp4Activation activation);

int32_t nvfp4_linear_inputs(const Nvfp4LinearFields& fields);  // 4 (w4a16) or 5 (w4a4)
// The one dtype each position accepts (pos = the input count is the output). The byte tensors
// (weight, weight_scale) are int8: see ElementType::kInt8.
ElementType nvfp4_linear_dtype(int32_t pos, const Nvfp4LinearFields& fields);
const char* nvfp4_linear_tensor_name(int32_t pos, const Nvfp4LinearFields& fields);

std::vector<FieldValue> nvfp4_linear_field_schema();
std::string parse_nvfp4_linear_fields(const std::vector<FieldView>& fields, Nvfp4LinearFields* out);
std::vector<FieldValue> serialize_nvfp4_linear_fields(const Nvfp4LinearFields& fields);

// Checks the input dims (-1 = not known yet) against each other and the fields; "" when
// consistent, else a message naming the tensor and dimension.
std::string check_nvfp4_linear_shapes(const std::vector<std::vector<int64_t>>& inputs, const Nvfp4LinearFields& fields);

// The dims of the weight_scale tensor of an [rows, cols] NVFP4 matrix in `layout` (also used by
// the MoE plugin per expert).
std::vector<int64_t> nvfp4_scale_dims(Nvfp4ScaleLayout layout, int64_t rows, int64_t cols);

// Whether the launcher's "auto" may pick the native W4A4 path, the only one with a workspace: it
// needs the input scale ("w4a4") and swizzled scales. Otherwise the plugin asks for no workspace
// and enqueue passes none (the W4A16 kernels never touch it).
bool nvfp4_linear_may_run_native(const Nvfp4LinearFields& fields);

// The launcher wants its workspace 256-byte aligned; TensorRT promises less, so the plugin asks
// for that much more and aligns the pointer itself (0 stays 0: the W4A16 kernels need none).
inline constexpr std::size_t kNvfp4WorkspaceAlignment = kWorkspaceAlignment;  // workspace_rules.h
std::size_t nvfp4_padded_workspace_bytes(std::size_t kernel_bytes);
void* nvfp4_aligned_workspace(void* workspace);

}  // namespace qwen35_trt::plugins
