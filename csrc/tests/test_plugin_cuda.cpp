// The CausalConv1d plugin's enqueue on a GPU against the C++ CPU reference: the library loaded as
// TensorRT loads it (dlopen + getCreators), the plugin built from its fields, onShapeChange and
// enqueue on device buffers, the aliased conv-state pool updated in place. Same thresholds as the
// kernel's own test (test_gdn_cuda.cpp): y within bf16 rounding, the pool bit-exact.
// Qwen35Nvfp4Linear: enqueue against moe::nvfp4_linear (W4A16; W4A4 where the launcher's "auto"
// picks the native sm_100a path), the three weight layouts, the workspace getWorkspaceSize asked for.
// Qwen35Nvfp4MoE: enqueue against moe::nvfp4_moe (W4A16 routed experts, fp32 router logits), the
// three weight layouts, T = 0; with the shared expert (field shared_expert = 1) against the reference's
// fused combine, and "w4a4" with swizzled scales (W4A4 where the launcher picks the native path).
// Qwen35GatedAttention: enqueue against attention::gated_attention (prefill chunks continuing a
// cached context, a decode step, MHA with full RoPE and one-token blocks), the paged KV pool
// updated in place through the aliased output, the workspace getWorkspaceSize asked for handed
// over misaligned.
// Usage: test_plugin_cuda <path of the plugin library>. Exits 77 (skipped) without a GPU.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attention_test_cases.h"
#include "check.h"
#include "cuda_test_util.h"
#include "gdn_test_cases.h"
#include "plugin_test_util.h"
#include "qwen35_trt/gdn.h"
#include "qwen35_trt/common/w4a16_fragments.h"
#include "qwen35_trt/kernels/moe.h"
#include "qwen35_trt/moe.h"
#include "qwen35_trt/nvfp4.h"

namespace gdn = qwen35_trt::gdn;
using qwen35_trt::testing::cu_of;
using qwen35_trt::testing::rel_error;

namespace {

qwen35_trt::testing::Random gen(1717);

template <typename T>
T* upload(const std::vector<T>& h) {
  T* p = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&p), h.size() * sizeof(T)));
  CUDA_OK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

template <typename T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  CUDA_OK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

nvinfer1::PluginTensorDesc desc(nvinfer1::DataType type, std::initializer_list<int64_t> dims) {
  nvinfer1::PluginTensorDesc d{};
  d.type = type;
  d.format = nvinfer1::TensorFormat::kLINEAR;
  d.dims.nbDims = static_cast<int32_t>(dims.size());
  int i = 0;
  for (int64_t v : dims) d.dims.d[i++] = v;
  return d;
}

void check_enqueue(nvinfer1::IPluginCreatorV3One* creator, int C, int W, const std::vector<int>& lens) {
  const auto cu = cu_of(lens);
  const int B = static_cast<int>(lens.size()), T = cu.back(), S = B + 3, H = W - 1;
  auto x = gen.randn_bf16(static_cast<size_t>(T) * C);
  auto w = gen.randn_bf16(static_cast<size_t>(C) * W, 0.5f);
  auto pool = gen.randn_bf16(static_cast<size_t>(S) * C * H);
  auto slots = gen.scrambled_slots(B, S);
  std::vector<uint8_t> init(B);
  for (int i = 0; i < B; ++i) init[i] = static_cast<uint8_t>(i % 2);

  std::vector<uint16_t> y_ref(x.size()), pool_ref = pool;
  gdn::CausalConv1dArgs<uint16_t> r;
  r.x = x;
  r.weight = w;
  r.state_pool = pool_ref;
  r.seqs.slots = slots;
  r.seqs.cu_seqlens = cu;
  r.seqs.has_initial_state = init;
  r.y = y_ref;
  r.channels = C;
  r.width = W;
  gdn::causal_conv1d(r);

  const int32_t width = W;
  const nvinfer1::PluginField fields[] = {{"width", &width, nvinfer1::PluginFieldType::kINT32, 1}};
  const nvinfer1::PluginFieldCollection fc{1, fields};
  nvinfer1::IPluginV3* plugin = creator->createPlugin("conv", &fc, nvinfer1::TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return;
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));

  using nvinfer1::DataType;
  const nvinfer1::PluginTensorDesc in[] = {
      desc(DataType::kBF16, {T, C}), desc(DataType::kBF16, {C, W}), desc(DataType::kBF16, {S, C, H}),
      desc(DataType::kINT32, {B}),   desc(DataType::kINT32, {B + 1}), desc(DataType::kBOOL, {B})};
  const nvinfer1::PluginTensorDesc out[] = {in[0], in[2]};
  CHECK(rt->onShapeChange(in, 6, out, 2) == 0);

  uint16_t* dx = upload(x);
  uint16_t* dw = upload(w);
  uint16_t* dpool = upload(pool);
  int32_t* dslots = upload(slots);
  int32_t* dcu = upload(cu);
  uint8_t* dinit = upload(init);
  uint16_t* dy = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dy), x.size() * sizeof(uint16_t)));
  CUDA_OK(cudaMemset(dy, 0xFF, x.size() * sizeof(uint16_t)));  // NaN: unwritten outputs fail
  const void* inputs[] = {dx, dw, dpool, dslots, dcu, dinit};
  void* outputs[] = {dy, dpool};  // output 1 aliases input 2, as TensorRT binds it
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, stream) == 0);
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto y = download(dy, x.size());
  const auto pool_out = download(dpool, pool.size());
  const double e = rel_error(y, y_ref);
  const std::string where = "C " + std::to_string(C) + " W " + std::to_string(W) + " T " + std::to_string(T);
  std::printf("%s: y rel error %.2e\n", where.c_str(), e);
  CHECK_MSG(e < 2e-3, where + ": y rel error " + std::to_string(e));
  CHECK_MSG(pool_out == pool_ref, where + ": conv state pool differs from the reference");

  CUDA_OK(cudaStreamDestroy(stream));
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(dpool),
                  static_cast<void*>(dslots), static_cast<void*>(dcu), static_cast<void*>(dinit),
                  static_cast<void*>(dy)}) {
    CUDA_OK(cudaFree(p));
  }
  delete plugin;
}

// Qwen35GatedDeltaNet: the plugin (workspace from its own getWorkspaceSize, deliberately handed
// over 16 bytes past a 256-byte boundary as TensorRT may) against the C++ reference. With
// algorithm "recurrent" the recurrent kernel's thresholds; with "auto" (the chunked prefill
// where the device fits it) the chunked prefill's.
void check_gdn_enqueue(nvinfer1::IPluginCreatorV3One* creator, const char* algorithm, int Hk, int Hv, int dk, int dv,
                       const std::vector<int>& lens, bool all_initial = false) {
  auto c = qwen35_trt::testing::make_gdn_case(gen, Hk, Hv, dk, dv, lens, all_initial);
  c.decode = false;  // the plugin always has the prefill form's inputs
  std::vector<uint16_t> o_ref;
  std::vector<float> pool_ref;
  qwen35_trt::testing::gdn_reference(c, o_ref, pool_ref);
  const int T = c.T(), B = static_cast<int>(lens.size()), S = c.slots;

  const nvinfer1::PluginField fields[] = {
      {"algorithm", algorithm, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::string(algorithm).size() + 1)}};
  const nvinfer1::PluginFieldCollection fc{1, fields};
  nvinfer1::IPluginV3* plugin = creator->createPlugin("gdn", &fc, nvinfer1::TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return;
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  auto* build = static_cast<nvinfer1::IPluginV3OneBuildV2*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));

  using nvinfer1::DataType;
  const nvinfer1::PluginTensorDesc in[] = {
      desc(DataType::kBF16, {T, Hk, dk}),        desc(DataType::kBF16, {T, Hk, dk}), desc(DataType::kBF16, {T, Hv, dv}),
      desc(DataType::kBF16, {T, Hv}),            desc(DataType::kBF16, {T, Hv}),     desc(DataType::kFLOAT, {Hv}),
      desc(DataType::kFLOAT, {Hv}),              desc(DataType::kFLOAT, {S, Hv, dk, dv}),
      desc(DataType::kINT32, {B}),               desc(DataType::kINT32, {B + 1}),    desc(DataType::kBOOL, {B})};
  const nvinfer1::PluginTensorDesc out[] = {in[2], in[7]};
  CHECK(rt->onShapeChange(in, 11, out, 2) == 0);
  std::vector<nvinfer1::DynamicPluginTensorDesc> dyn(13);
  for (int i = 0; i < 13; ++i) {
    dyn[i].desc = i < 11 ? in[i] : out[i - 11];
    dyn[i].min = dyn[i].opt = dyn[i].max = dyn[i].desc.dims;
  }
  const size_t ws_bytes = build->getWorkspaceSize(dyn.data(), 11, dyn.data() + 11, 2);

  uint16_t* dq = upload(c.q);
  uint16_t* dk_ = upload(c.k);
  uint16_t* dv_ = upload(c.v);
  uint16_t* da = upload(c.a);
  uint16_t* db = upload(c.b);
  float* dalog = upload(c.A_log);
  float* ddt = upload(c.dt_bias);
  float* dpool = upload(c.pool);
  int32_t* dslots = upload(c.slot_ids);
  int32_t* dcu = upload(c.cu);
  uint8_t* dinit = upload(c.init);
  uint16_t* dout = nullptr;
  const size_t o_size = static_cast<size_t>(T) * Hv * dv;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dout), o_size * sizeof(uint16_t)));
  CUDA_OK(cudaMemset(dout, 0xFF, o_size * sizeof(uint16_t)));  // NaN: unwritten outputs fail
  unsigned char* dws = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dws), ws_bytes + 16));
  const void* inputs[] = {dq, dk_, dv_, da, db, dalog, ddt, dpool, dslots, dcu, dinit};
  void* outputs[] = {dout, dpool};  // output 1 aliases input 7, as TensorRT binds it
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  CHECK(rt->enqueue(in, out, inputs, outputs, ws_bytes > 0 ? dws + 16 : nullptr, stream) == 0);
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto o = download(dout, o_size);
  const auto pool_out = download(dpool, c.pool.size());
  const double eo = rel_error(o, o_ref), es = rel_error(pool_out, pool_ref);
  const bool recurrent = std::string(algorithm) == "recurrent";
  const std::string where = std::string(algorithm) + " Hk " + std::to_string(Hk) + " Hv " + std::to_string(Hv) +
                            " dk " + std::to_string(dk) + " dv " + std::to_string(dv) + " T " + std::to_string(T) +
                            " B " + std::to_string(B) + " workspace " + std::to_string(ws_bytes);
  std::printf("%s: o rel error %.2e, state rel error %.2e\n", where.c_str(), eo, es);
  CHECK_MSG(eo < (recurrent ? 2e-3 : 1e-2), where + ": o rel error " + std::to_string(eo));
  CHECK_MSG(es < (recurrent ? 1e-4 : 1e-2), where + ": state rel error " + std::to_string(es));

  CUDA_OK(cudaStreamDestroy(stream));
  for (void* p : {static_cast<void*>(dq), static_cast<void*>(dk_), static_cast<void*>(dv_), static_cast<void*>(da),
                  static_cast<void*>(db), static_cast<void*>(dalog), static_cast<void*>(ddt),
                  static_cast<void*>(dpool), static_cast<void*>(dslots), static_cast<void*>(dcu),
                  static_cast<void*>(dinit), static_cast<void*>(dout), static_cast<void*>(dws)}) {
    CUDA_OK(cudaFree(p));
  }
  delete plugin;
}

// --- Qwen35Nvfp4Linear ------------------------------------------------------------------------

namespace mo = qwen35_trt::moe;
namespace fp4 = qwen35_trt::nvfp4;

// A random NVFP4 weight [N, K]: packed codes and E4M3 scales (exponents kept moderate) stored in
// `layout`, zero padded as the swizzled layout asks.
void random_nvfp4(size_t N, size_t K, mo::ScaleLayout layout, std::vector<uint8_t>* packed,
                  std::vector<uint8_t>* scales) {
  packed->resize(N * K / 2);
  for (auto& b : *packed) b = static_cast<uint8_t>(gen.rng());
  const size_t blocks = K / 16;
  scales->assign(mo::scale_bytes(layout, N, K), 0);
  for (size_t r = 0; r < N; ++r) {
    for (size_t b = 0; b < blocks; ++b) {
      const uint32_t e = 4 + gen.rng() % 7, m = gen.rng() % 8;
      (*scales)[mo::scale_offset(layout, r, b, blocks)] = static_cast<uint8_t>((e << 3) | m);
    }
  }
}

// The plugin's view of weights made for the reference: `layout` as the plugin field names it, the
// layout the reference reads (ModelOpt's order for the fragment layout), and the device copy.
struct Layouts {
  mo::ScaleLayout plugin;
  bool swizzled, fragments;
  mo::ScaleLayout reference() const { return fragments ? mo::ScaleLayout::kRowMajor : plugin; }
  const char* name() const { return swizzled ? "swizzled_128x4" : fragments ? "w4a16_fragments" : "row_major"; }
};
Layouts layouts(mo::ScaleLayout plugin) {
  return {plugin, plugin == mo::ScaleLayout::kSwizzled128x4, plugin == mo::ScaleLayout::kW4A16Fragments};
}

// Row-major NVFP4 rows [rows, K] (packed, scales) as the device reads them in `l`.
void device_copy(const Layouts& l, size_t rows, size_t K, std::vector<uint8_t>* packed, std::vector<uint8_t>* scales) {
  if (!l.fragments) return;
  std::vector<uint8_t> p(packed->size()), s(scales->size());
  for (size_t r = 0; r < rows; ++r) {
    CHECK(fp4::pack_fragment_row(&(*packed)[r * K / 2], &(*scales)[r * K / 16], K, &p[r * K / 2], &s[r * K / 16], nullptr));
  }
  *packed = std::move(p);
  *scales = std::move(s);
}

void check_linear_enqueue(nvinfer1::IPluginCreatorV3One* creator, size_t M, size_t N, size_t K, mo::ScaleLayout plugin_layout,
                          bool w4a4) {
  const Layouts lay = layouts(plugin_layout);
  const bool swizzled = lay.swizzled;
  const mo::ScaleLayout layout = lay.reference();
  std::vector<uint8_t> packed, scales;
  random_nvfp4(N, K, layout, &packed, &scales);
  const auto x = gen.randn_bf16(M * K);
  const float s2 = 0.0137f, input_scale = 0.02f;
  // The launcher's "auto": native W4A4 only with input scales on a device the sm_100a code runs on.
  const bool native = w4a4 && swizzled && K % 32 == 0 && N % 8 == 0 && qwen35_trt::kernels::nvfp4_native_available(0);
  mo::Nvfp4Weights view;
  view.packed = {packed.data(), packed.size()};
  view.scales = {scales.data(), scales.size()};
  view.layout = layout;
  view.rows = N;
  view.cols = K;
  std::vector<uint16_t> want(M * N);
  mo::nvfp4_linear(x, M, {view, s2, input_scale}, native ? mo::Activation::kW4A4 : mo::Activation::kW4A16, want);

  device_copy(lay, N, K, &packed, &scales);
  const char* layout_name = lay.name();
  const char* act = w4a4 ? "w4a4" : "w4a16";
  const nvinfer1::PluginField fields[] = {
      {"scale_layout", layout_name, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(layout_name) + 1)},
      {"activation", act, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(act) + 1)}};
  const nvinfer1::PluginFieldCollection fc{2, fields};
  nvinfer1::IPluginV3* plugin = creator->createPlugin("linear", &fc, nvinfer1::TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return;
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  auto* build = static_cast<nvinfer1::IPluginV3OneBuildV2*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  const int32_t n_in = w4a4 ? 5 : 4;
  const int64_t sr = swizzled ? static_cast<int64_t>((N + 127) / 128 * 128) : static_cast<int64_t>(N);
  const int64_t sc = swizzled ? static_cast<int64_t>((K / 16 + 3) / 4 * 4) : static_cast<int64_t>(K / 16);
  const auto M_ = static_cast<int64_t>(M), N_ = static_cast<int64_t>(N), K_ = static_cast<int64_t>(K);
  nvinfer1::PluginTensorDesc in[5] = {desc(nvinfer1::DataType::kBF16, {M_, K_}),
                                      desc(nvinfer1::DataType::kINT8, {N_, K_ / 2}),
                                      desc(nvinfer1::DataType::kINT8, {sr, sc}), desc(nvinfer1::DataType::kFLOAT, {}),
                                      desc(nvinfer1::DataType::kFLOAT, {1})};
  nvinfer1::PluginTensorDesc out[1] = {desc(nvinfer1::DataType::kBF16, {M_, N_})};
  CHECK(rt->onShapeChange(in, n_in, out, 1) == 0);
  // The workspace as a builder sizes it: the profile's largest T (here exactly M).
  std::vector<nvinfer1::DynamicPluginTensorDesc> dyn(n_in + 1);
  for (int32_t i = 0; i <= n_in; ++i) {
    dyn[i].desc = i < n_in ? in[i] : out[0];
    dyn[i].min = dyn[i].opt = dyn[i].max = dyn[i].desc.dims;
  }
  const size_t ws_bytes = build->getWorkspaceSize(dyn.data(), n_in, dyn.data() + n_in, 1);

  const uint16_t* dx = upload(x);
  const uint8_t* dw = upload(packed);
  const uint8_t* ds = upload(scales);
  const float* ds2 = upload(std::vector<float>{s2});
  const float* dis = upload(std::vector<float>{input_scale});
  uint16_t* dy = upload(std::vector<uint16_t>(M * N, 0xFFFF));  // NaN poison: every element must be written
  char* dws = nullptr;
  if (ws_bytes > 0) CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dws), ws_bytes + 16));
  const void* inputs[] = {dx, dw, ds, ds2, dis};
  void* outputs[] = {dy};
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  // An offset workspace: TensorRT promises less than the launcher's 256-byte alignment.
  CHECK(rt->enqueue(in, out, inputs, outputs, ws_bytes > 0 ? dws + 16 : nullptr, stream) == 0);
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto y = download(dy, M * N);
  size_t bad = 0;
  for (uint16_t v : y) bad += std::isfinite(fp4::bf16_to_float(v)) ? 0 : 1;
  const double err = rel_error(y, want);
  const std::string where = std::string("linear ") + layout_name + " " + act + (native ? " (native)" : "") + " M " +
                            std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) + " workspace " +
                            std::to_string(ws_bytes);
  std::printf("%s: y rel error %.2e, %zu non-finite\n", where.c_str(), err, bad);
  CHECK_MSG(bad == 0 && err < (native ? 1e-2 : 2e-3), where + ": rel error " + std::to_string(err));

  CUDA_OK(cudaStreamDestroy(stream));
  for (const void* p : {static_cast<const void*>(dx), static_cast<const void*>(dw), static_cast<const void*>(ds),
                        static_cast<const void*>(ds2), static_cast<const void*>(dis), static_cast<const void*>(dy),
                        static_cast<const void*>(dws)}) {
    CUDA_OK(cudaFree(const_cast<void*>(p)));
  }
  delete plugin;
}

// --- Qwen35Nvfp4MoE ---------------------------------------------------------------------------

// Is > 0 adds the shared expert (field shared_expert = 1): its three linears with scalar globals,
// the gate vector as the checkpoint's [1, H]. `w4a4` adds the input scales (routed [E], shared
// [1]); the reference is W4A4 only where the launcher's "auto" picks the native path.
void check_moe_enqueue(nvinfer1::IPluginCreatorV3One* creator, int T, int E, int k, int H, int I,
                       mo::ScaleLayout plugin_layout, int Is = 0, bool w4a4 = false) {
  const Layouts lay = layouts(plugin_layout);
  const bool swizzled = lay.swizzled;
  const mo::ScaleLayout layout = lay.reference();
  std::vector<uint8_t> gu_packed, gu_scales, dn_packed, dn_scales;
  // E experts stacked: each expert's matrix and scales one after the other (the strides).
  for (int e = 0; e < E; ++e) {
    std::vector<uint8_t> p1, s1, p2, s2;
    random_nvfp4(2 * I, H, layout, &p1, &s1);
    random_nvfp4(H, I, layout, &p2, &s2);
    gu_packed.insert(gu_packed.end(), p1.begin(), p1.end());
    gu_scales.insert(gu_scales.end(), s1.begin(), s1.end());
    dn_packed.insert(dn_packed.end(), p2.begin(), p2.end());
    dn_scales.insert(dn_scales.end(), s2.begin(), s2.end());
  }
  std::vector<float> gu_s2(2 * E), dn_s2(E), gu_is(E), dn_is(E);
  for (int i = 0; i < 2 * E; ++i) gu_s2[i] = 0.005f + 0.001f * static_cast<float>(i % 7);
  for (int i = 0; i < E; ++i) dn_s2[i] = 0.007f + 0.001f * static_cast<float>(i % 5);
  for (int i = 0; i < E; ++i) gu_is[i] = 0.02f + 0.001f * static_cast<float>(i % 3);
  for (int i = 0; i < E; ++i) dn_is[i] = 0.03f + 0.001f * static_cast<float>(i % 4);
  const auto x = gen.randn_bf16(static_cast<size_t>(T) * H);
  const auto logits = gen.randn_f32(static_cast<size_t>(T) * E);
  // The shared expert (Is > 0): gate, up [Is, H], down [H, Is]; globals and input scales as scalars
  // (gate and up with equal input scales, as ModelOpt exports them for one input).
  struct SharedLinear {
    std::vector<uint8_t> packed, scales;
    float s2 = 0.0f, input_scale = 0.0f;
  };
  SharedLinear sh[3];
  const int sizes[3][2] = {{Is, H}, {Is, H}, {H, Is}};
  if (Is > 0) {
    for (int l = 0; l < 3; ++l) {
      random_nvfp4(sizes[l][0], sizes[l][1], layout, &sh[l].packed, &sh[l].scales);
      sh[l].s2 = 0.011f + 0.002f * static_cast<float>(l);
      sh[l].input_scale = l == 2 ? 0.025f : 0.021f;
    }
  }
  const auto gate_vector = gen.randn_bf16(static_cast<size_t>(H));
  const bool native = w4a4 && swizzled && H % 32 == 0 && I % 32 == 0 && Is % 32 == 0 &&
                      qwen35_trt::kernels::nvfp4_native_available(0);

  mo::MoeExperts ex;
  ex.num_experts = E;
  ex.hidden = H;
  ex.intermediate = I;
  ex.gate_up.packed = {gu_packed.data(), gu_packed.size()};
  ex.gate_up.scales = {gu_scales.data(), gu_scales.size()};
  ex.gate_up.layout = layout;
  ex.gate_up.count = E;
  ex.gate_up.rows = 2 * I;
  ex.gate_up.cols = H;
  ex.down.packed = {dn_packed.data(), dn_packed.size()};
  ex.down.scales = {dn_scales.data(), dn_scales.size()};
  ex.down.layout = layout;
  ex.down.count = E;
  ex.down.rows = H;
  ex.down.cols = I;
  ex.gate_up_scale_2 = {gu_s2.data(), gu_s2.size()};
  ex.down_scale_2 = {dn_s2.data(), dn_s2.size()};
  ex.gate_up_input_scale = {gu_is.data(), gu_is.size()};
  ex.down_input_scale = {dn_is.data(), dn_is.size()};
  mo::SharedExpert shared;
  mo::Nvfp4LinearWeights* shared_linears[3] = {&shared.gate, &shared.up, &shared.down};
  for (int l = 0; l < 3 && Is > 0; ++l) {
    mo::Nvfp4Weights w;
    w.packed = {sh[l].packed.data(), sh[l].packed.size()};
    w.scales = {sh[l].scales.data(), sh[l].scales.size()};
    w.layout = layout;
    w.rows = sizes[l][0];
    w.cols = sizes[l][1];
    *shared_linears[l] = {w, sh[l].s2, sh[l].input_scale};
  }
  shared.gate_weight = {gate_vector.data(), gate_vector.size()};
  std::vector<uint16_t> want(static_cast<size_t>(T) * H);
  mo::nvfp4_moe(x, logits, T, k, ex, Is > 0 ? &shared : nullptr, native ? mo::Activation::kW4A4 : mo::Activation::kW4A16,
                want);

  device_copy(lay, static_cast<size_t>(E) * 2 * I, H, &gu_packed, &gu_scales);
  device_copy(lay, static_cast<size_t>(E) * H, I, &dn_packed, &dn_scales);
  for (int l = 0; l < 3 && Is > 0; ++l) device_copy(lay, sizes[l][0], sizes[l][1], &sh[l].packed, &sh[l].scales);
  const char* layout_name = lay.name();
  const char* act = w4a4 ? "w4a4" : "w4a16";
  const int32_t top_k = k, shared_expert = Is > 0 ? 1 : 0;
  const nvinfer1::PluginField fields[] = {
      {"top_k", &top_k, nvinfer1::PluginFieldType::kINT32, 1},
      {"scale_layout", layout_name, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(layout_name) + 1)},
      {"activation", act, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(act) + 1)},
      {"shared_expert", &shared_expert, nvinfer1::PluginFieldType::kINT32, 1}};
  const nvinfer1::PluginFieldCollection fc{4, fields};
  nvinfer1::IPluginV3* plugin = creator->createPlugin("moe", &fc, nvinfer1::TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return;
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  auto* build = static_cast<nvinfer1::IPluginV3OneBuildV2*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  const auto sd = [&](int64_t rows, int64_t cols) {
    return swizzled ? std::vector<int64_t>{(rows + 127) / 128 * 128, (cols / 16 + 3) / 4 * 4}
                    : std::vector<int64_t>{rows, cols / 16};
  };
  const auto gs = sd(2 * I, H), ds_ = sd(H, I);
  using DT = nvinfer1::DataType;
  std::vector<nvinfer1::PluginTensorDesc> in = {desc(DT::kBF16, {T, H}),
                                                desc(DT::kFLOAT, {T, E}),
                                                desc(DT::kINT8, {E, 2 * I, H / 2}),
                                                desc(DT::kINT8, {E, gs[0], gs[1]}),
                                                desc(DT::kFLOAT, {E, 2}),
                                                desc(DT::kINT8, {E, H, I / 2}),
                                                desc(DT::kINT8, {E, ds_[0], ds_[1]}),
                                                desc(DT::kFLOAT, {E})};
  const uint16_t* dx = upload(x);
  const float* dlogits = upload(logits);
  std::vector<const void*> buffers = {dx, dlogits, upload(gu_packed), upload(gu_scales), upload(gu_s2),
                                      upload(dn_packed), upload(dn_scales), upload(dn_s2)};
  if (w4a4) {
    in.push_back(desc(DT::kFLOAT, {E}));
    in.push_back(desc(DT::kFLOAT, {E}));
    buffers.push_back(upload(gu_is));
    buffers.push_back(upload(dn_is));
  }
  for (int l = 0; l < 3 && Is > 0; ++l) {
    const auto s = sd(sizes[l][0], sizes[l][1]);
    in.push_back(desc(DT::kINT8, {sizes[l][0], sizes[l][1] / 2}));
    in.push_back(desc(DT::kINT8, {s[0], s[1]}));
    in.push_back(desc(DT::kFLOAT, {}));  // weight_scale_2 as a scalar
    buffers.push_back(upload(sh[l].packed));
    buffers.push_back(upload(sh[l].scales));
    buffers.push_back(upload(std::vector<float>{sh[l].s2}));
    if (w4a4) {
      in.push_back(desc(DT::kFLOAT, {1}));  // input_scale as [1]
      buffers.push_back(upload(std::vector<float>{sh[l].input_scale}));
    }
  }
  if (Is > 0) {
    in.push_back(desc(DT::kBF16, {1, H}));  // shared_expert_gate.weight as in the checkpoint
    buffers.push_back(upload(gate_vector));
  }
  const auto n_in = static_cast<int32_t>(in.size());
  CHECK(n_in == 8 + (w4a4 ? 2 : 0) + (Is > 0 ? (w4a4 ? 13 : 10) : 0));
  nvinfer1::PluginTensorDesc out[1] = {desc(DT::kBF16, {T, H})};
  CHECK(rt->onShapeChange(in.data(), n_in, out, 1) == 0);
  std::vector<nvinfer1::DynamicPluginTensorDesc> dyn(n_in + 1);
  for (int32_t i = 0; i <= n_in; ++i) {
    dyn[i].desc = i < n_in ? in[i] : out[0];
    dyn[i].min = dyn[i].opt = dyn[i].max = dyn[i].desc.dims;
  }
  const size_t ws_bytes = build->getWorkspaceSize(dyn.data(), n_in, dyn.data() + n_in, 1);

  uint16_t* dy = upload(std::vector<uint16_t>(want.size() + 1, 0xFFFF));  // NaN poison
  char* dws = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dws), ws_bytes + 16));
  void* outputs[] = {dy};
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  CHECK(rt->enqueue(in.data(), out, buffers.data(), outputs, dws + 16, stream) == 0);  // misaligned: the plugin aligns
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto y = download(dy, want.size());
  size_t bad = 0;
  for (uint16_t v : y) bad += std::isfinite(fp4::bf16_to_float(v)) ? 0 : 1;
  const double err = T > 0 ? rel_error(y, want) : 0.0;
  const std::string where = std::string("moe ") + layout_name + " " + act + (native ? " (native)" : "") + " T " +
                            std::to_string(T) + " E " + std::to_string(E) + " k " + std::to_string(k) + " H " +
                            std::to_string(H) + " I " + std::to_string(I) + " Is " + std::to_string(Is) +
                            " workspace " + std::to_string(ws_bytes);
  std::printf("%s: out rel error %.2e, %zu non-finite\n", where.c_str(), err, bad);
  CHECK_MSG(bad == 0 && err < 1e-2, where + ": rel error " + std::to_string(err));  // test_moe_cuda's bound

  CUDA_OK(cudaStreamDestroy(stream));
  buffers.push_back(dy);
  buffers.push_back(dws);
  for (const void* p : buffers) CUDA_OK(cudaFree(const_cast<void*>(p)));
  delete plugin;
}

// --- Qwen35GatedAttention ---------------------------------------------------------------------

using qwen35_trt::testing::AttnCase;
using qwen35_trt::testing::AttnShape;

// One call of random sequences (attention_test_cases.h: lens[i] new tokens after ctx[i] cached ones,
// shuffled block ids, unused table entries out of range, a random pool holding the cached keys and
// values). `scale` < 0: the field is left out, so the plugin's default head_dim ** -0.5 (Python's
// double power, rounded to fp32) must be what the reference gets. The kernel test's thresholds:
// out within bf16 rounding; the pool equal except rare last-bit flips of new keys (the device's
// cosf / sinf / powf against the host's), here counted over the whole pool.
void check_attention_enqueue(nvinfer1::IPluginCreatorV3One* creator, const AttnShape& shape, const std::vector<int>& lens,
                             const std::vector<int>& ctx, float eps = 1e-6f, float scale = -1.0f) {
  AttnCase c = qwen35_trt::testing::make_attn_case(gen, shape, lens, ctx);
  c.eps = eps;
  c.scale = scale > 0.0f ? scale : static_cast<float>(std::pow(static_cast<double>(shape.hd), -0.5));
  std::vector<uint16_t> out_ref, pool_ref;
  qwen35_trt::testing::attention_reference(c, out_ref, pool_ref);
  const int T = c.T(), B = c.B();

  using PF = nvinfer1::PluginFieldType;
  std::vector<nvinfer1::PluginField> fields = {
      {"num_heads", &c.s.nh, PF::kINT32, 1},        {"num_kv_heads", &c.s.nkv, PF::kINT32, 1},
      {"head_dim", &c.s.hd, PF::kINT32, 1},         {"rotary_dim", &c.s.rot, PF::kINT32, 1},
      {"rope_theta", &c.s.theta, PF::kFLOAT32, 1},  {"eps", &c.eps, PF::kFLOAT32, 1}};
  if (scale > 0.0f) fields.emplace_back("scale", &c.scale, PF::kFLOAT32, 1);
  const nvinfer1::PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
  nvinfer1::IPluginV3* plugin = creator->createPlugin("attention", &fc, nvinfer1::TensorRTPhase::kRUNTIME);
  CHECK(plugin != nullptr);
  if (plugin == nullptr) return;
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  auto* build = static_cast<nvinfer1::IPluginV3OneBuildV2*>(
      plugin->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));

  using DT = nvinfer1::DataType;
  const nvinfer1::PluginTensorDesc in[] = {
      desc(DT::kBF16, {T, c.qg_width()}), desc(DT::kBF16, {T, c.kv_width()}), desc(DT::kBF16, {T, c.kv_width()}),
      desc(DT::kBF16, {c.s.hd}),          desc(DT::kBF16, {c.s.hd}),
      desc(DT::kBF16, {c.num_blocks, 2, c.s.nkv, c.s.bs, c.s.hd}),
      desc(DT::kINT32, {B, c.max_blocks}), desc(DT::kINT32, {B + 1}),          desc(DT::kINT32, {B})};
  const nvinfer1::PluginTensorDesc out[] = {desc(DT::kBF16, {T, c.out_width()}), in[5]};
  CHECK(rt->onShapeChange(in, 9, out, 2) == 0);
  std::vector<nvinfer1::DynamicPluginTensorDesc> dyn(11);
  for (int i = 0; i < 11; ++i) {
    dyn[i].desc = i < 9 ? in[i] : out[i - 9];
    dyn[i].min = dyn[i].opt = dyn[i].max = dyn[i].desc.dims;
  }
  const size_t ws_bytes = build->getWorkspaceSize(dyn.data(), 9, dyn.data() + 9, 2);

  const uint16_t* dqg = upload(c.qg);
  const uint16_t* dk = upload(c.k);
  const uint16_t* dv = upload(c.v);
  const uint16_t* dqw = upload(c.q_w);
  const uint16_t* dkw = upload(c.k_w);
  uint16_t* dpool = upload(c.pool);
  const int32_t* dtables = upload(c.tables);
  const int32_t* dcu = upload(c.cu);
  const int32_t* dctx = upload(c.ctx);
  uint16_t* dout = upload(std::vector<uint16_t>(out_ref.size(), 0xFFFF));  // NaN poison: every row must be written
  char* dws = nullptr;
  CUDA_OK(cudaMalloc(reinterpret_cast<void**>(&dws), ws_bytes + 16));
  const void* inputs[] = {dqg, dk, dv, dqw, dkw, dpool, dtables, dcu, dctx};
  void* outputs[] = {dout, dpool};  // output 1 aliases input 5, as TensorRT binds it
  cudaStream_t stream = nullptr;
  CUDA_OK(cudaStreamCreate(&stream));
  CHECK(rt->enqueue(in, out, inputs, outputs, dws + 16, stream) == 0);  // misaligned: the plugin aligns
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto got = download(dout, out_ref.size());
  const auto pool_out = download(dpool, pool_ref.size());
  size_t pool_diff = 0;
  for (size_t i = 0; i < pool_ref.size(); ++i) pool_diff += pool_out[i] != pool_ref[i] ? 1 : 0;
  const size_t new_keys = static_cast<size_t>(T) * c.kv_width();
  const double e = rel_error(got, out_ref);
  const std::string where = "attention nh " + std::to_string(c.s.nh) + " nkv " + std::to_string(c.s.nkv) + " hd " +
                            std::to_string(c.s.hd) + " rot " + std::to_string(c.s.rot) + " bs " +
                            std::to_string(c.s.bs) + " T " + std::to_string(T) + " B " + std::to_string(B) +
                            " workspace " + std::to_string(ws_bytes);
  std::printf("%s: out rel error %.2e, %zu pool elements differ (%zu new keys)\n", where.c_str(), e, pool_diff,
              new_keys);
  CHECK_MSG(e < 1e-2, where + ": out rel error " + std::to_string(e));
  CHECK_MSG(pool_diff * 1000 < new_keys, where + ": " + std::to_string(pool_diff) + " pool elements differ");

  CUDA_OK(cudaStreamDestroy(stream));
  for (const void* p : {static_cast<const void*>(dqg), static_cast<const void*>(dk), static_cast<const void*>(dv),
                        static_cast<const void*>(dqw), static_cast<const void*>(dkw), static_cast<const void*>(dpool),
                        static_cast<const void*>(dtables), static_cast<const void*>(dcu),
                        static_cast<const void*>(dctx), static_cast<const void*>(dout),
                        static_cast<const void*>(dws)}) {
    CUDA_OK(cudaFree(const_cast<void*>(p)));
  }
  delete plugin;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <libqwen35_trt_plugins.so>\n", argv[0]);
    return 2;
  }
  if (!qwen35_trt::testing::have_cuda_device()) return qwen35_trt::testing::kSkip;
  nvinfer1::IPluginCreatorV3One* creator = qwen35_trt::testing::load_creator(argv[1], "Qwen35CausalConv1d");
  check_enqueue(creator, 64, 4, {1, 2, 65});
  check_enqueue(creator, 8192, 4, {3, 70});  // 35B channels
  check_enqueue(creator, 24, 2, {5, 1, 9});
  check_enqueue(creator, 16, 8, {2, 130});

  nvinfer1::IPluginCreatorV3One* gdn = qwen35_trt::testing::load_creator(argv[1], "Qwen35GatedDeltaNet");
  for (const char* algorithm : {"recurrent", "auto"}) {
    check_gdn_enqueue(gdn, algorithm, 2, 4, 128, 128, {1, 70, 130});  // prefill, mixed fresh / continued
    check_gdn_enqueue(gdn, algorithm, 2, 4, 64, 64, {65, 3});
    check_gdn_enqueue(gdn, algorithm, 2, 4, 128, 128, {1, 1, 1, 1}, true);  // a decode step (T == B)
  }
  check_gdn_enqueue(gdn, "recurrent", 1, 2, 256, 32, {5, 9});  // dk the chunked prefill does not take

  const auto rm = mo::ScaleLayout::kRowMajor, sw = mo::ScaleLayout::kSwizzled128x4,
             fr = mo::ScaleLayout::kW4A16Fragments;
  nvinfer1::IPluginCreatorV3One* linear = qwen35_trt::testing::load_creator(argv[1], "Qwen35Nvfp4Linear");
  check_linear_enqueue(linear, 1, 1, 16, rm, false);  // smallest N and K
  check_linear_enqueue(linear, 5, 48, 64, rm, false);
  check_linear_enqueue(linear, 33, 130, 96, sw, false);  // N, K/16 not multiples of the swizzle tile
  check_linear_enqueue(linear, 300, 256, 512, sw, true);  // w4a4: native on sm_100a, else W4A16
  check_linear_enqueue(linear, 7, 64, 48, rm, true);  // w4a4 with row-major scales: always W4A16
  check_linear_enqueue(linear, 33, 130, 96, fr, false);  // sm_90 / sm_120 engines: a full and a partial group
  check_linear_enqueue(linear, 300, 256, 512, fr, false);

  nvinfer1::IPluginCreatorV3One* moe = qwen35_trt::testing::load_creator(argv[1], "Qwen35Nvfp4MoE");
  check_moe_enqueue(moe, 1, 8, 2, 64, 32, rm);  // a decode step
  check_moe_enqueue(moe, 37, 8, 2, 128, 64, rm);
  check_moe_enqueue(moe, 70, 16, 4, 64, 48, sw);  // swizzled: 2I and H/16 padded per expert
  check_moe_enqueue(moe, 0, 4, 1, 32, 16, rm);  // no tokens: nothing to do
  // The shared expert fused into the combine (one bf16 rounding, as the reference).
  check_moe_enqueue(moe, 1, 8, 2, 64, 32, rm, 48);  // a decode step
  check_moe_enqueue(moe, 37, 8, 2, 128, 64, rm, 16);  // the smallest Is
  check_moe_enqueue(moe, 70, 16, 4, 64, 48, sw, 80);  // swizzled: Is and Is/16 padded too
  check_moe_enqueue(moe, 40, 8, 2, 128, 64, sw, 64, true);  // w4a4: native on sm_100a, else W4A16
  check_moe_enqueue(moe, 0, 4, 1, 32, 16, rm, 32);  // no tokens
  check_moe_enqueue(moe, 1, 8, 2, 64, 32, fr, 48);  // the fragment layout (sm_90 / sm_120 engines)
  check_moe_enqueue(moe, 70, 16, 4, 128, 80, fr, 80);

  nvinfer1::IPluginCreatorV3One* attention = qwen35_trt::testing::load_creator(argv[1], "Qwen35GatedAttention");
  // 35B-A3B heads: prompts and chunks continuing a cached context.
  check_attention_enqueue(attention, {16, 2, 256, 64, 16, 1.0e7f}, {1, 37, 5}, {0, 20, 100});
  check_attention_enqueue(attention, {8, 2, 128, 32, 32}, {1, 1, 1, 1}, {3, 64, 0, 200});  // a decode step (T == B)
  check_attention_enqueue(attention, {4, 4, 64, 64, 1}, {9, 2}, {0, 5}, 0.0f, 0.2f);  // MHA, full RoPE, eps 0, scale given
  return qwen35_trt::test::report();
}
