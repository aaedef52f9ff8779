// Host side of the Nvfp4MoE / Nvfp4Linear launchers: validation, workspace carving, the launch
// sequence and the choice between the W4A16 kernels and the sm_100a native path.
//
// Nvfp4MoE launch sequence (all on one stream, no host synchronisation):
//   memset(counts) -> route (top-k, weights, histogram) -> plan (offsets, row tiles)
//   -> scatter (permutation) -> routed experts: W4A16 GEMM gate/up + SwiGLU -> W4A16 GEMM down
//      (or the native W4A4 pipeline) -> shared expert (two dense GEMMs) -> combine.
#include <cstdlib>
#include <cstring>

#include "moe_internal.h"
#include "qwen35_trt/kernels/moe.h"
#include "qwen35_trt/common/nvfp4_codec.h"

namespace qwen35_trt::kernels {
namespace {

using namespace moe_detail;

constexpr std::size_t kAlign = 256;

std::size_t align_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// Sequential carving of one workspace; with base == nullptr it only measures.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* take(std::size_t count) {
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += align_up(count * sizeof(T));
    return p;
  }
  std::size_t used() const { return used_; }

 private:
  char* base_;
  std::size_t used_ = 0;
};

struct MoeWorkspace {
  int32_t *counts, *group_offsets, *sf_offsets, *tile_group, *tile_row0, *num_tiles;
  int32_t *ids, *perm_token, *row_of, *row_expert;
  float* weights;
  __nv_bfloat16 *act, *y, *act_shared, *y_shared;
  void* native_scratch;
};

MoeWorkspace carve(const Nvfp4MoeParams& p, Carver& c) {
  const std::size_t T = static_cast<std::size_t>(p.tokens), k = p.top_k, E = p.num_experts;
  const std::size_t H = p.hidden_size, I = p.intermediate, Is = p.shared_intermediate;
  const std::size_t entries = T * k;
  // Capacity for the smallest row-tile height: enough for any height choose_bm picks.
  const std::size_t max_tiles = static_cast<std::size_t>(max_row_tiles(static_cast<int64_t>(entries), p.num_experts, 16));
  MoeWorkspace w{};
  w.counts = c.take<int32_t>(E);
  w.group_offsets = c.take<int32_t>(E + 1);
  w.sf_offsets = c.take<int32_t>(E + 1);
  w.tile_group = c.take<int32_t>(max_tiles);
  w.tile_row0 = c.take<int32_t>(max_tiles);
  w.num_tiles = c.take<int32_t>(1);
  w.ids = c.take<int32_t>(entries);
  w.weights = c.take<float>(entries);
  w.perm_token = c.take<int32_t>(entries);
  w.row_of = c.take<int32_t>(entries);
  w.row_expert = c.take<int32_t>(entries);
  w.act = c.take<__nv_bfloat16>(entries * I);
  w.y = c.take<__nv_bfloat16>(entries * H);
  w.act_shared = c.take<__nv_bfloat16>(T * Is);
  w.y_shared = c.take<__nv_bfloat16>(T * H);
  w.native_scratch = native_compiled() ? c.take<char>(native_moe_scratch_bytes(p)) : nullptr;
  return w;
}

bool disabled_by_env() {
  const char* v = std::getenv("QWEN35_TRT_DISABLE_NATIVE_FP4");
  return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
}

int current_device() {
  int d = 0;
  if (cudaGetDevice(&d) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  return d;
}

// `eligible`: the call carries input scales and shapes / layouts the native path takes.
bool use_native(Nvfp4Backend backend, bool eligible) {
  if (backend == Nvfp4Backend::kW4A16) return false;
  return eligible && nvfp4_native_available(current_device());  // kNative otherwise: refused
}

// What the native path can take: 128x4-swizzled scales (sm_100 engines) and 16-byte TMA rows
// (K % 32 == 0 for packed FP4, N % 8 == 0 for bf16 outputs). Anything else runs W4A16.
bool swizzled(const Nvfp4DeviceWeights& w) { return w.layout == ScaleLayout::kSwizzled128x4; }

bool native_shapes(const Nvfp4MoeParams& p) {
  bool ok = swizzled(p.gate) && swizzled(p.up) && swizzled(p.down) && p.hidden_size % 32 == 0 &&
            p.intermediate % 32 == 0;
  if (p.shared_intermediate > 0) {
    ok = ok && swizzled(p.shared_gate) && swizzled(p.shared_up) && swizzled(p.shared_down) &&
         p.shared_intermediate % 32 == 0;
  }
  return ok;
}

// The sizes alone: all the workspace size depends on, so that a caller that has no buffers yet
// (a TensorRT plugin sizing for its profile at build time) gets the same answer as the launch.
bool valid_moe_shapes(const Nvfp4MoeParams& p) {
  return p.tokens >= 0 && p.num_experts >= 1 && p.num_experts <= kMaxExperts &&
         p.top_k >= 1 && p.top_k <= p.num_experts && p.top_k <= moe::kMaxTopK &&
         p.hidden_size >= nvfp4::kBlockSize && p.hidden_size % nvfp4::kBlockSize == 0 &&
         p.intermediate >= nvfp4::kBlockSize && p.intermediate % nvfp4::kBlockSize == 0 &&
         p.shared_intermediate >= 0 && p.shared_intermediate % nvfp4::kBlockSize == 0;
}

bool valid_moe(const Nvfp4MoeParams& p) {
  if (!valid_moe_shapes(p)) return false;
  if (p.tokens == 0) return true;
  const bool ptrs = p.hidden != nullptr && p.router_logits != nullptr && p.out != nullptr &&
                    (p.shared_intermediate == 0 || p.shared_gate_weight != nullptr);
  return ptrs && reinterpret_cast<uintptr_t>(p.hidden) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.out) % 16 == 0 &&
         (p.shared_intermediate == 0 || reinterpret_cast<uintptr_t>(p.shared_gate_weight) % 16 == 0);
}

#define QWEN35_TRY(expr)                        \
  do {                                          \
    const cudaError_t qwen35_status_ = (expr);  \
    if (qwen35_status_ != cudaSuccess) return qwen35_status_; \
  } while (0)

// The shared expert with the W4A16 kernels: act_shared = SwiGLU(gate, up)(hidden), y_shared.
cudaError_t shared_expert_w4a16(const Nvfp4MoeParams& p, const MoeWorkspace& w, cudaStream_t stream) {
  W4A16GemmArgs g1;
  g1.a = p.hidden;
  g1.lda = p.hidden_size;
  g1.b0 = p.shared_gate;
  g1.b1 = p.shared_up;
  g1.out = w.act_shared;
  g1.ldo = p.shared_intermediate;
  g1.n = p.shared_intermediate;
  g1.k = p.hidden_size;
  g1.rows = p.tokens;
  g1.swiglu = true;
  g1.bm = choose_bm(p.tokens, 1);
  QWEN35_TRY(launch_w4a16_gemm(g1, stream));
  W4A16GemmArgs g2;
  g2.a = w.act_shared;
  g2.lda = p.shared_intermediate;
  g2.b0 = p.shared_down;
  g2.out = w.y_shared;
  g2.ldo = p.hidden_size;
  g2.n = p.hidden_size;
  g2.k = p.shared_intermediate;
  g2.rows = p.tokens;
  g2.bm = g1.bm;
  return launch_w4a16_gemm(g2, stream);
}

}  // namespace

bool nvfp4_native_compiled() { return native_compiled(); }

bool nvfp4_native_available(int device) {
  if (!native_compiled() || device < 0 || disabled_by_env()) return false;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major == 10 && minor == 0;  // sm_100a code runs on compute capability 10.0 only
}

std::size_t nvfp4_moe_workspace_size(const Nvfp4MoeParams& p) {
  if (!valid_moe_shapes(p)) return 0;
  Carver c(nullptr);
  carve(p, c);
  return c.used();
}

cudaError_t nvfp4_moe(const Nvfp4MoeParams& p, void* workspace, std::size_t workspace_bytes,
                      cudaStream_t stream) {
  if (!valid_moe(p)) return cudaErrorInvalidValue;
  if (p.tokens == 0) return cudaSuccess;
  if (workspace == nullptr || workspace_bytes < nvfp4_moe_workspace_size(p) ||
      reinterpret_cast<uintptr_t>(workspace) % kAlign != 0) {
    return cudaErrorInvalidValue;
  }
  const bool has_is = p.gate.input_scale != nullptr && p.down.input_scale != nullptr &&
                      (p.shared_intermediate == 0 ||
                       (p.shared_gate.input_scale != nullptr && p.shared_down.input_scale != nullptr));
  const bool native = use_native(p.backend, has_is && native_shapes(p));
  if (p.backend == Nvfp4Backend::kNative && !native) return cudaErrorNotSupported;

  Carver c(workspace);
  MoeWorkspace w = carve(p, c);
  if (p.topk_ids != nullptr) w.ids = p.topk_ids;
  if (p.topk_weights != nullptr) w.weights = p.topk_weights;
  const int32_t entries = p.tokens * p.top_k;
  const int32_t bm = choose_bm(entries, p.num_experts);

  QWEN35_TRY(cudaMemsetAsync(w.counts, 0, sizeof(int32_t) * p.num_experts, stream));
  QWEN35_TRY(launch_route(p.router_logits, p.router_logits_bf16, p.tokens, p.num_experts, p.top_k,
                          w.ids, w.weights, w.counts, stream));
  QWEN35_TRY(launch_plan(w.counts, p.num_experts, bm, w.group_offsets, w.tile_group, w.tile_row0,
                         w.num_tiles, w.sf_offsets, stream));
  QWEN35_TRY(launch_scatter(w.ids, entries, p.top_k, w.group_offsets, w.counts, w.perm_token,
                            w.row_of, w.row_expert, stream));
  TileList tiles{w.group_offsets, w.tile_group, w.tile_row0, w.num_tiles,
                 max_row_tiles(entries, p.num_experts, bm)};
  if (native) {
    NativeMoeWorkspace nw{w.ids, w.group_offsets, w.sf_offsets, w.perm_token, w.row_expert, w.y,
                          w.native_scratch};
    QWEN35_TRY(native_moe_experts(p, nw, stream));
  } else {
    W4A16GemmArgs g1;
    g1.a = p.hidden;
    g1.lda = p.hidden_size;
    g1.a_rows = w.perm_token;
    g1.b0 = p.gate;
    g1.b1 = p.up;
    g1.out = w.act;
    g1.ldo = p.intermediate;
    g1.n = p.intermediate;
    g1.k = p.hidden_size;
    g1.tiles = tiles;
    g1.swiglu = true;
    g1.bm = bm;
    QWEN35_TRY(launch_w4a16_gemm(g1, stream));
    W4A16GemmArgs g2;
    g2.a = w.act;
    g2.lda = p.intermediate;
    g2.b0 = p.down;
    g2.out = w.y;
    g2.ldo = p.hidden_size;
    g2.n = p.hidden_size;
    g2.k = p.intermediate;
    g2.tiles = tiles;
    g2.bm = bm;
    QWEN35_TRY(launch_w4a16_gemm(g2, stream));
  }
  if (p.shared_intermediate > 0) {
    if (native) {
      QWEN35_TRY(native_shared_expert(p, w.act_shared, w.y_shared, w.native_scratch, stream));
    } else {
      QWEN35_TRY(shared_expert_w4a16(p, w, stream));
    }
  }
  return launch_combine(w.y, w.row_of, w.weights, p.tokens, p.top_k, p.hidden_size,
                        p.shared_intermediate > 0 ? w.y_shared : nullptr, p.hidden,
                        p.shared_gate_weight, p.out, stream);
}

std::size_t nvfp4_linear_workspace_size(const Nvfp4LinearParams& p) {
  return native_compiled() ? native_linear_workspace_bytes(p) : 0;
}

cudaError_t nvfp4_linear(const Nvfp4LinearParams& p, void* workspace, std::size_t workspace_bytes,
                         cudaStream_t stream) {
  if (p.rows < 0 || p.n < 1 || p.k < nvfp4::kBlockSize || p.k % nvfp4::kBlockSize != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0) return cudaSuccess;
  const bool native = use_native(p.backend, p.w.input_scale != nullptr && swizzled(p.w) &&
                                                 p.k % 32 == 0 && p.n % 8 == 0);
  if (p.backend == Nvfp4Backend::kNative && !native) return cudaErrorNotSupported;
  if (native) {
    if (workspace_bytes < native_linear_workspace_bytes(p)) return cudaErrorInvalidValue;
    return native_linear(p, workspace, stream);
  }
  W4A16GemmArgs g;
  g.a = p.x;
  g.lda = p.k;
  g.b0 = p.w;
  g.b0.packed_stride = g.b0.scale_stride = 0;
  g.b0.global_stride = 0;
  g.out = p.y;
  g.ldo = p.n;
  g.n = p.n;
  g.k = p.k;
  g.rows = p.rows;
  g.bm = choose_bm(p.rows, 1);
  return launch_w4a16_gemm(g, stream);
}

}  // namespace qwen35_trt::kernels
