// Native NVFP4 (W4A4) path for Blackwell, compiled only for sm_100a: activations quantized per 16
// with the static input_scale (the W4A4 rule of qwen35_trt/common/moe_math.h), then one CUTLASS 4.2 grouped
// block-scaled GEMM (tcgen05 MMA, kind::mxf4nvf4, FP8 UE4M3 scales in the 128x4 layout) serves
// every GEMM: the routed experts' gate_up and down (one group per expert), the shared expert
// (gate and up as two groups on the same activations, then down) and the dense Nvfp4Linear
// (one group). One kernel type keeps the compile time to one CUTLASS instantiation.
//
//   routed: quantize(gather(hidden)) -> GEMM gate_up [M_e, 2I] (alpha = is_e * s2_gate_e)
//           -> SwiGLU (up times s2_up / s2_gate) + quantize -> GEMM down [M_e, H] -> y
// Per-group pointers, strides, problem shapes and scale-factor layouts are written on the device
// from the routing (no host synchronisation). Each expert's activation scale factors start at a
// 128-row boundary (sf_offsets from moe_plan), as the 128x4 layout requires.
//
// Written against CUTLASS 4.2 (nvidia-cutlass==4.2.0.0) and compiled in CI; no Blackwell GPU was
// available to run it (see bench/RESULTS.md). Differences from the CPU reference's W4A4 mode:
// the gate/up GEMM output is rounded to bf16 before SwiGLU (the reference keeps fp32).
#include <algorithm>
#include <cstdint>

#include "common/per_device.h"
#include "moe_internal.h"
#include "qwen35_trt/common/moe_math.h"
#include "qwen35_trt/common/nvfp4_codec.h"
#include "qwen35_trt/common/scalar_math.h"

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/detail/sm100_blockscaled_layout.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/group_array_problem_shape.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace qwen35_trt::kernels::moe_detail {

#if defined(CUTLASS_ARCH_MMA_SM100_SUPPORTED)

namespace {

using namespace cute;

// --- the one GEMM type ------------------------------------------------------------------------
using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;  // (M, N, K) per group
using ElementA = cutlass::nv_float4_t<cutlass::float_e2m1_t>;
using ElementB = cutlass::nv_float4_t<cutlass::float_e2m1_t>;
using ElementD = cutlass::bfloat16_t;
using ElementAccumulator = float;
using LayoutA = cutlass::layout::RowMajor;     // activations [M, K], K contiguous
using LayoutB = cutlass::layout::ColumnMajor;  // weights [N, K], K contiguous
using LayoutD = cutlass::layout::RowMajor;
constexpr int kAlignAB = 32;                   // elements (16 bytes of FP4)
constexpr int kAlignD = 8;                     // elements (16 bytes of bf16)
using MmaTileShape = Shape<_128, _128, _256>;
using ClusterShape = Shape<_1, _1, _1>;

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm100, cutlass::arch::OpClassBlockScaledTensorOp, MmaTileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementAccumulator,
    void, LayoutD*, kAlignD, ElementD, LayoutD*, kAlignD,
    cutlass::epilogue::PtrArrayTmaWarpSpecialized1Sm>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm100, cutlass::arch::OpClassBlockScaledTensorOp, ElementA, LayoutA*, kAlignAB,
    ElementB, LayoutB*, kAlignAB, ElementAccumulator, MmaTileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelPtrArrayTmaWarpSpecialized1SmNvf4Sm100>::CollectiveOp;

using GemmKernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

using StrideA = typename GemmKernel::InternalStrideA;
using StrideB = typename GemmKernel::InternalStrideB;
using StrideD = typename GemmKernel::InternalStrideD;
using LayoutSFA = typename GemmKernel::CollectiveMainloop::InternalLayoutSFA;
using LayoutSFB = typename GemmKernel::CollectiveMainloop::InternalLayoutSFB;
using SfConfig = typename GemmKernel::CollectiveMainloop::Sm1xxBlkScaledConfig;
using UnderlyingShape = typename ProblemShape::UnderlyingProblemShape;
using DataA = typename Gemm::ElementA;
using DataB = typename Gemm::ElementB;
using ElementSF = typename GemmKernel::ElementSF;

// Per-group argument arrays, carved from the scratch.
struct GroupArrays {
  UnderlyingShape* shapes;
  const DataA** a;
  const DataB** b;
  const ElementSF** sfa;
  const ElementSF** sfb;
  ElementD** d;
  StrideA* stride_a;
  StrideB* stride_b;
  StrideD* stride_d;
  LayoutSFA* layout_sfa;
  LayoutSFB* layout_sfb;
  float* alpha;
  const float** alpha_ptr;
};

__host__ __device__ inline int64_t padded_blocks(int64_t k) { return (k / nvfp4::kBlockSize + 3) / 4 * 4; }

// One group of a GEMM call: rows [row0, row0 + m) of the quantized activations (their scale
// factors starting at padded row sf_row0), a weight operand, an output and its row stride.
struct GroupSource {
  const int32_t* offsets;     // [G + 1] row ranges (nullptr: one group of `rows` rows at 0)
  const int32_t* sf_offsets;  // [G + 1] padded scale-factor rows (nullptr: 0)
  int32_t rows;
};

__global__ void setup_groups_kernel(GroupArrays g, int32_t groups, GroupSource src, int32_t n,
                                    int32_t k, const uint8_t* a_q, const uint8_t* sfa,
                                    Nvfp4DeviceWeights w0, Nvfp4DeviceWeights w1, bool two_weights,
                                    __nv_bfloat16* d, int64_t ldd, int64_t d_col1) {
  const int32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= groups) return;
  // Two weights (shared gate/up): both groups read the same activation rows.
  const int32_t e = two_weights ? 0 : i;
  const Nvfp4DeviceWeights& w = two_weights && i == 1 ? w1 : w0;
  const int32_t row0 = src.offsets ? src.offsets[e] : 0;
  const int32_t m = src.offsets ? src.offsets[e + 1] - row0 : src.rows;
  const int32_t sf_row0 = src.sf_offsets ? src.sf_offsets[e] : 0;
  const int64_t kp = padded_blocks(k);
  g.shapes[i] = UnderlyingShape(m, n, k);
  g.a[i] = reinterpret_cast<const DataA*>(a_q + static_cast<int64_t>(row0) * (k / 2));
  g.sfa[i] = reinterpret_cast<const ElementSF*>(sfa + static_cast<int64_t>(sf_row0) * kp);
  const int32_t we = two_weights ? 0 : i;
  g.b[i] = reinterpret_cast<const DataB*>(w.packed + we * w.packed_stride +
                                          static_cast<int64_t>(w.row_offset) * (k / 2));
  g.sfb[i] = reinterpret_cast<const ElementSF*>(w.scales + we * w.scale_stride);
  g.d[i] = reinterpret_cast<ElementD*>(d + static_cast<int64_t>(row0) * ldd + (two_weights && i == 1 ? d_col1 : 0));
  StrideA sa{};
  get<0>(sa) = k;
  StrideB sb{};
  get<0>(sb) = k;
  StrideD sd{};
  get<0>(sd) = ldd;
  g.stride_a[i] = sa;
  g.stride_b[i] = sb;
  g.stride_d[i] = sd;
  g.layout_sfa[i] = SfConfig::tile_atom_to_shape_SFA(make_shape(m, n, k, 1));
  g.layout_sfb[i] = SfConfig::tile_atom_to_shape_SFB(make_shape(m, n, k, 1));
  const float in_scale = w0.input_scale[static_cast<int64_t>(e) * w0.input_stride];
  g.alpha[i] = in_scale * w.global_scale[static_cast<int64_t>(we) * w.global_stride];
  g.alpha_ptr[i] = g.alpha + i;
}

// Quantize one block of 16 activations per thread into packed E2M1 + a UE4M3 scale in the
// per-group 128x4 layout. Sources: plain rows (a_rows gathers), or SwiGLU of [gate | up] halves.
struct QuantizeArgs {
  const __nv_bfloat16* in;
  int64_t ld_in;
  const int32_t* a_rows;       // gather for plain sources (nullptr: identity)
  bool swiglu;                 // in = [rows, 2K] gate | up
  const float* up_ratio_num;   // SwiGLU: up is scaled by num[g * s] / den[g * s] (nullptr: 1)
  const float* up_ratio_den;
  int32_t ratio_stride;
  const float* input_scale;    // activation global of group g at input_scale[g * is_stride]
  int32_t is_stride;
  const int32_t* row_group;    // group of each row (nullptr: 0)
  const int32_t* offsets;      // first row of each group (nullptr: 0)
  const int32_t* sf_offsets;   // first padded scale row of each group (nullptr: 0)
  int64_t rows;
  int32_t k;                   // columns of the quantized matrix
  uint8_t* out;                // [rows, k / 2]
  uint8_t* sf;
};

// 16 bf16 values from p as floats: two 16-byte loads when kVector (p 16-byte aligned: the
// launcher checks the source pointer, its row stride and k), else element by element.
template <bool kVector>
__device__ __forceinline__ void load_block(const __nv_bfloat16* p, float (&x)[16]) {
  if constexpr (kVector) {
    const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 w = v[h];
      const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&words[j]));
        x[8 * h + 2 * j] = f.x;
        x[8 * h + 2 * j + 1] = f.y;
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) x[j] = __bfloat162float(p[j]);
  }
}

// One thread per 16-element block (one scale). kVector: see load_block.
template <bool kVector>
__global__ void quantize_kernel(const QuantizeArgs q) {
  const int32_t blocks = q.k / nvfp4::kBlockSize;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= q.rows * blocks) return;
  const int64_t r = i / blocks;
  const int32_t b = static_cast<int32_t>(i % blocks);
  const int32_t g = q.row_group ? q.row_group[r] : 0;
  float x[16];
  if (q.swiglu) {
    float ratio = 1.0f;
    if (q.up_ratio_num != nullptr) {
      ratio = q.up_ratio_num[static_cast<int64_t>(g) * q.ratio_stride] /
              q.up_ratio_den[static_cast<int64_t>(g) * q.ratio_stride];
    }
    const __nv_bfloat16* row = q.in + r * q.ld_in;
    float up[16];
    load_block<kVector>(row + b * 16, x);
    load_block<kVector>(row + q.k + b * 16, up);
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      x[j] = __bfloat162float(__float2bfloat16_rn(math::swiglu(x[j], up[j] * ratio)));  // a is bf16
    }
  } else {
    const int64_t src = q.a_rows ? q.a_rows[r] : r;
    load_block<kVector>(q.in + src * q.ld_in + b * 16, x);
  }
  const float is = q.input_scale[static_cast<int64_t>(g) * q.is_stride];
  float amax = 0.0f;
  for (int j = 0; j < 16; ++j) amax = fmaxf(amax, fabsf(x[j]));
  const uint8_t sa_bits = moe::activation_block_scale(amax, is);
  const float denom = nvfp4::decode_e4m3(sa_bits) * is;
  uint32_t lo = 0, hi = 0;
  for (int j = 0; j < 8; ++j) {
    lo |= static_cast<uint32_t>(nvfp4::encode_e2m1(x[j] / denom)) << (4 * j);
    hi |= static_cast<uint32_t>(nvfp4::encode_e2m1(x[8 + j] / denom)) << (4 * j);
  }
  reinterpret_cast<uint2*>(q.out + r * (q.k / 2))[b] = make_uint2(lo, hi);
  const int64_t m = r - (q.offsets ? q.offsets[g] : 0);
  const int64_t base = static_cast<int64_t>(q.sf_offsets ? q.sf_offsets[g] : 0) * padded_blocks(q.k);
  q.sf[base + nvfp4::swizzle_offset_128x4(m, b, padded_blocks(q.k))] = sa_bits;
}

cudaError_t launch_quantize(const QuantizeArgs& q, cudaStream_t stream) {
  const int64_t threads = q.rows * (q.k / nvfp4::kBlockSize);
  if (threads == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>((threads + 255) / 256);
  const bool vector = reinterpret_cast<uintptr_t>(q.in) % 16 == 0 && q.ld_in % 8 == 0 && q.k % 16 == 0;
  if (vector) {
    quantize_kernel<true><<<grid, 256, 0, stream>>>(q);
  } else {
    quantize_kernel<false><<<grid, 256, 0, stream>>>(q);
  }
  return cudaGetLastError();
}

int device_sm_count() {
  int dev = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    cudaGetLastError();
    return 148;
  }
  return n;
}

// The GEMM's one-time setup on the current device: its SM count (the persistent grid) and the
// kernel's shared-memory opt-in, once per device and process (GemmUniversalAdapter::initialize
// would set the attribute again on every call).
cudaError_t gemm_device_setup(int& device, int& sms) {
  static PerDevice<int> cache;
  cudaError_t e = current_device(device);
  if (e != cudaSuccess) return e;
  return cache.get(device, sms, [device](int& n) {
    cudaError_t s = cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
    constexpr int kSmem = static_cast<int>(GemmKernel::SharedStorageSize);
    if (s == cudaSuccess && kSmem >= (48 << 10)) {
      s = cudaFuncSetAttribute(cutlass::device_kernel<GemmKernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    }
    return s;
  });
}

// The GEMM's arguments on `device` with `sms` SMs (sizing the workspace: the current device, or a
// B200's 148 SMs where none can be queried).
typename Gemm::Arguments gemm_arguments(const GroupArrays& g, int32_t groups, int device = -1, int sms = 0) {
  cutlass::KernelHardwareInfo hw;
  hw.device_id = device;
  if (device < 0) {
    hw.device_id = 0;
    cudaGetDevice(&hw.device_id);
    cudaGetLastError();
  }
  hw.sm_count = sms > 0 ? sms : device_sm_count();
  typename Gemm::Arguments args;
  args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
  args.problem_shape = {groups, g.shapes, nullptr};  // shapes live on the device only
  args.mainloop = {g.a, g.stride_a, g.b, g.stride_b, g.sfa, g.layout_sfa, g.sfb, g.layout_sfb};
  auto& fusion = args.epilogue.thread;
  fusion.alpha = 0.0f;
  fusion.alpha_ptr = nullptr;
  fusion.alpha_ptr_array = g.alpha_ptr;
  fusion.dAlpha = {_0{}, _0{}, 1};
  fusion.beta = 0.0f;
  fusion.beta_ptr = nullptr;
  fusion.beta_ptr_array = nullptr;
  fusion.dBeta = {_0{}, _0{}, 0};
  args.epilogue.ptr_C = nullptr;
  args.epilogue.dC = nullptr;
  args.epilogue.ptr_D = g.d;
  args.epilogue.dD = g.stride_d;
  args.hw_info = hw;
  return args;
}

// Scratch layout of one native call (sizes depend only on the shapes).
struct Scratch {
  uint8_t *a_q, *sfa, *a2_q, *sfa2;
  __nv_bfloat16* gate_up;  // [rows, 2 N1] GEMM 1 output
  GroupArrays groups;
  void* cutlass_ws;
  std::size_t cutlass_ws_bytes;
};

constexpr std::size_t kAlign = 256;
std::size_t up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct Sizes {
  int64_t rows;       // activation rows of the GEMMs
  int32_t groups;     // largest group count
  int64_t k1, n1;     // GEMM 1: K = H, N = 2 I (or Is)
  int64_t sf_rows;    // padded scale rows
};

template <typename F>
std::size_t carve_scratch(const Sizes& s, char* base, F&& assign) {
  std::size_t off = 0;
  auto take = [&](std::size_t bytes) {
    char* p = base ? base + off : nullptr;
    off += up(bytes);
    return p;
  };
  Scratch sc{};
  sc.a_q = reinterpret_cast<uint8_t*>(take(s.rows * s.k1 / 2));
  sc.sfa = reinterpret_cast<uint8_t*>(take(s.sf_rows * padded_blocks(s.k1)));
  sc.a2_q = reinterpret_cast<uint8_t*>(take(s.rows * s.n1 / 2));
  sc.sfa2 = reinterpret_cast<uint8_t*>(take(s.sf_rows * padded_blocks(s.n1)));
  sc.gate_up = reinterpret_cast<__nv_bfloat16*>(take(s.rows * 2 * s.n1 * 2));
  const std::size_t G = static_cast<std::size_t>(s.groups);
  sc.groups.shapes = reinterpret_cast<UnderlyingShape*>(take(G * sizeof(UnderlyingShape)));
  sc.groups.a = reinterpret_cast<const DataA**>(take(G * sizeof(void*)));
  sc.groups.b = reinterpret_cast<const DataB**>(take(G * sizeof(void*)));
  sc.groups.sfa = reinterpret_cast<const ElementSF**>(take(G * sizeof(void*)));
  sc.groups.sfb = reinterpret_cast<const ElementSF**>(take(G * sizeof(void*)));
  sc.groups.d = reinterpret_cast<ElementD**>(take(G * sizeof(void*)));
  sc.groups.stride_a = reinterpret_cast<StrideA*>(take(G * sizeof(StrideA)));
  sc.groups.stride_b = reinterpret_cast<StrideB*>(take(G * sizeof(StrideB)));
  sc.groups.stride_d = reinterpret_cast<StrideD*>(take(G * sizeof(StrideD)));
  sc.groups.layout_sfa = reinterpret_cast<LayoutSFA*>(take(G * sizeof(LayoutSFA)));
  sc.groups.layout_sfb = reinterpret_cast<LayoutSFB*>(take(G * sizeof(LayoutSFB)));
  sc.groups.alpha = reinterpret_cast<float*>(take(G * sizeof(float)));
  sc.groups.alpha_ptr = reinterpret_cast<const float**>(take(G * sizeof(void*)));
  sc.cutlass_ws_bytes = Gemm::get_workspace_size(gemm_arguments(sc.groups, s.groups));
  sc.cutlass_ws = take(sc.cutlass_ws_bytes);
  assign(sc);
  return off;
}

Sizes moe_sizes(const Nvfp4MoeParams& p) {
  const int64_t T = p.tokens, k = p.top_k, E = p.num_experts;
  Sizes s;
  s.rows = std::max<int64_t>(T * k, T);
  s.groups = static_cast<int32_t>(std::max<int64_t>(E, 2));
  s.k1 = p.hidden_size;
  s.n1 = std::max<int64_t>(p.intermediate, p.shared_intermediate);
  s.sf_rows = s.rows + 128 * std::max<int64_t>(E, 1);
  return s;
}

#define QWEN35_TRY(expr)                                       \
  do {                                                         \
    const cudaError_t qwen35_status_ = (expr);                 \
    if (qwen35_status_ != cudaSuccess) return qwen35_status_;  \
  } while (0)

// One grouped GEMM: GemmUniversalAdapter::initialize and run without the adapter's per-call
// cudaFuncSetAttribute (gemm_device_setup did it once for the device) and device queries.
cudaError_t run_gemm(const Scratch& sc, int32_t groups, cudaStream_t stream) {
  int device = 0, sms = 0;
  QWEN35_TRY(gemm_device_setup(device, sms));
  const auto args = gemm_arguments(sc.groups, groups, device, sms);
  if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (Gemm::get_workspace_size(args) > sc.cutlass_ws_bytes) return cudaErrorInvalidValue;
  if (GemmKernel::initialize_workspace(args, sc.cutlass_ws, stream) != cutlass::Status::kSuccess) {
    return cudaErrorUnknown;
  }
  typename GemmKernel::Params params = GemmKernel::to_underlying_arguments(args, sc.cutlass_ws);
  if (Gemm::run(params, stream) != cutlass::Status::kSuccess) return cudaErrorLaunchFailure;
  return cudaGetLastError();
}

cudaError_t setup(const Scratch& sc, int32_t groups, GroupSource src, int32_t n, int32_t k,
                  const uint8_t* a_q, const uint8_t* sfa, const Nvfp4DeviceWeights& w0,
                  const Nvfp4DeviceWeights* w1, __nv_bfloat16* d, int64_t ldd, int64_t d_col1,
                  cudaStream_t stream) {
  setup_groups_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(
      sc.groups, groups, src, n, k, a_q, sfa, w0, w1 ? *w1 : w0, w1 != nullptr, d, ldd, d_col1);
  return cudaGetLastError();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool native_shapes_ok(int64_t k, int64_t n) {
  // TMA needs 16-byte rows: K % 32 (packed FP4) and N % 8 (bf16 output).
  return k % 32 == 0 && n % 8 == 0;
}

}  // namespace

bool native_compiled() { return true; }

std::size_t native_moe_scratch_bytes(const Nvfp4MoeParams& p) {
  return carve_scratch(moe_sizes(p), nullptr, [](const Scratch&) {});
}

cudaError_t native_moe_experts(const Nvfp4MoeParams& p, const NativeMoeWorkspace& ws, cudaStream_t stream) {
  const int32_t H = p.hidden_size, I = p.intermediate, E = p.num_experts;
  if (!native_shapes_ok(H, 2 * I) || !native_shapes_ok(I, H)) return cudaErrorInvalidValue;
  if (p.gate.layout != ScaleLayout::kSwizzled128x4 || p.down.layout != ScaleLayout::kSwizzled128x4) {
    return cudaErrorInvalidValue;  // block-scaled MMA reads the 128x4 layout only (sm_100 engines)
  }
  const Sizes s = moe_sizes(p);
  Scratch sc{};
  carve_scratch(s, static_cast<char*>(ws.scratch), [&](const Scratch& x) { sc = x; });
  const int64_t rows = static_cast<int64_t>(p.tokens) * p.top_k;
  // Padding scale factors must be finite (they multiply zero-filled data).
  QWEN35_TRY(cudaMemsetAsync(sc.sfa, 0, s.sf_rows * padded_blocks(H), stream));
  QWEN35_TRY(cudaMemsetAsync(sc.sfa2, 0, s.sf_rows * padded_blocks(s.n1), stream));

  QuantizeArgs q1{};
  q1.in = p.hidden;
  q1.ld_in = H;
  q1.a_rows = ws.perm_token;
  q1.input_scale = p.gate.input_scale;
  q1.is_stride = p.gate.input_stride;
  q1.row_group = ws.row_expert;
  q1.offsets = ws.group_offsets;
  q1.sf_offsets = ws.sf_offsets;
  q1.rows = rows;
  q1.k = H;
  q1.out = sc.a_q;
  q1.sf = sc.sfa;
  QWEN35_TRY(launch_quantize(q1, stream));

  // GEMM 1: the fused gate_up matrix as one [2I, H] operand per expert, alpha from gate's global.
  Nvfp4DeviceWeights gu = p.gate;
  gu.row_offset = 0;
  const GroupSource routed{ws.group_offsets, ws.sf_offsets, 0};
  QWEN35_TRY(setup(sc, E, routed, 2 * I, H, sc.a_q, sc.sfa, gu, nullptr, sc.gate_up, 2 * I, 0, stream));
  QWEN35_TRY(run_gemm(sc, E, stream));

  QuantizeArgs q2{};
  q2.in = sc.gate_up;
  q2.ld_in = 2 * I;
  q2.swiglu = true;
  q2.up_ratio_num = p.up.global_scale;  // up's global over gate's: GEMM 1 applied gate's
  q2.up_ratio_den = p.gate.global_scale;
  q2.ratio_stride = p.gate.global_stride;
  q2.input_scale = p.down.input_scale;
  q2.is_stride = p.down.input_stride;
  q2.row_group = ws.row_expert;
  q2.offsets = ws.group_offsets;
  q2.sf_offsets = ws.sf_offsets;
  q2.rows = rows;
  q2.k = I;
  q2.out = sc.a2_q;
  q2.sf = sc.sfa2;
  QWEN35_TRY(launch_quantize(q2, stream));

  QWEN35_TRY(setup(sc, E, routed, H, I, sc.a2_q, sc.sfa2, p.down, nullptr, ws.y, H, 0, stream));
  return run_gemm(sc, E, stream);
}

cudaError_t native_shared_expert(const Nvfp4MoeParams& p, __nv_bfloat16* act, __nv_bfloat16* y,
                                 void* scratch, cudaStream_t stream) {
  (void)act;
  const int32_t H = p.hidden_size, Is = p.shared_intermediate;
  if (!native_shapes_ok(H, Is) || !native_shapes_ok(Is, H) ||
      p.shared_gate.layout != ScaleLayout::kSwizzled128x4) {
    return cudaErrorInvalidValue;
  }
  const Sizes s = moe_sizes(p);
  Scratch sc{};
  carve_scratch(s, static_cast<char*>(scratch), [&](const Scratch& x) { sc = x; });
  QWEN35_TRY(cudaMemsetAsync(sc.sfa, 0, s.sf_rows * padded_blocks(H), stream));
  QWEN35_TRY(cudaMemsetAsync(sc.sfa2, 0, s.sf_rows * padded_blocks(s.n1), stream));
  QuantizeArgs q1{};
  q1.in = p.hidden;
  q1.ld_in = H;
  q1.input_scale = p.shared_gate.input_scale;  // gate and up read the same (once quantized) input
  q1.rows = p.tokens;
  q1.k = H;
  q1.out = sc.a_q;
  q1.sf = sc.sfa;
  QWEN35_TRY(launch_quantize(q1, stream));
  // Gate and up: two groups on the same rows, writing the two halves of [T, 2 Is].
  const GroupSource dense{nullptr, nullptr, p.tokens};
  QWEN35_TRY(setup(sc, 2, dense, Is, H, sc.a_q, sc.sfa, p.shared_gate, &p.shared_up, sc.gate_up,
                   2 * Is, Is, stream));
  QWEN35_TRY(run_gemm(sc, 2, stream));
  QuantizeArgs q2{};
  q2.in = sc.gate_up;
  q2.ld_in = 2 * Is;
  q2.swiglu = true;
  q2.input_scale = p.shared_down.input_scale;
  q2.rows = p.tokens;
  q2.k = Is;
  q2.out = sc.a2_q;
  q2.sf = sc.sfa2;
  QWEN35_TRY(launch_quantize(q2, stream));
  QWEN35_TRY(setup(sc, 1, dense, H, Is, sc.a2_q, sc.sfa2, p.shared_down, nullptr, y, H, 0, stream));
  return run_gemm(sc, 1, stream);
}

std::size_t native_linear_workspace_bytes(const Nvfp4LinearParams& p) {
  Sizes s;
  s.rows = p.rows;
  s.groups = 1;
  s.k1 = p.k;
  s.n1 = 0;
  s.sf_rows = p.rows + 128;
  return carve_scratch(s, nullptr, [](const Scratch&) {});
}

cudaError_t native_linear(const Nvfp4LinearParams& p, void* workspace, cudaStream_t stream) {
  if (!native_shapes_ok(p.k, p.n) || p.w.layout != ScaleLayout::kSwizzled128x4 ||
      !aligned16(p.x) || !aligned16(p.y) || workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  Sizes s;
  s.rows = p.rows;
  s.groups = 1;
  s.k1 = p.k;
  s.n1 = 0;
  s.sf_rows = p.rows + 128;
  Scratch sc{};
  carve_scratch(s, static_cast<char*>(workspace), [&](const Scratch& x) { sc = x; });
  QWEN35_TRY(cudaMemsetAsync(sc.sfa, 0, s.sf_rows * padded_blocks(p.k), stream));
  QuantizeArgs q{};
  q.in = p.x;
  q.ld_in = p.k;
  q.input_scale = p.w.input_scale;
  q.rows = p.rows;
  q.k = p.k;
  q.out = sc.a_q;
  q.sf = sc.sfa;
  QWEN35_TRY(launch_quantize(q, stream));
  Nvfp4DeviceWeights w = p.w;
  w.packed_stride = w.scale_stride = 0;
  w.global_stride = w.input_stride = 0;
  const GroupSource dense{nullptr, nullptr, static_cast<int32_t>(p.rows)};
  QWEN35_TRY(setup(sc, 1, dense, p.n, p.k, sc.a_q, sc.sfa, w, nullptr, p.y, p.n, 0, stream));
  return run_gemm(sc, 1, stream);
}

#else  // not compiled for sm_100a: behave as the stub

bool native_compiled() { return false; }
std::size_t native_moe_scratch_bytes(const Nvfp4MoeParams&) { return 0; }
cudaError_t native_moe_experts(const Nvfp4MoeParams&, const NativeMoeWorkspace&, cudaStream_t) {
  return cudaErrorNotSupported;
}
cudaError_t native_shared_expert(const Nvfp4MoeParams&, __nv_bfloat16*, __nv_bfloat16*, void*, cudaStream_t) {
  return cudaErrorNotSupported;
}
std::size_t native_linear_workspace_bytes(const Nvfp4LinearParams&) { return 0; }
cudaError_t native_linear(const Nvfp4LinearParams&, void*, cudaStream_t) { return cudaErrorNotSupported; }

#endif

}  // namespace qwen35_trt::kernels::moe_detail
