// Drives libqwen35_trt_plugins.so the way a TensorRT builder and runtime do, without any TensorRT
// library: dlopen + getCreators, createPlugin from a PluginFieldCollection, the build-phase calls
// (getOutputDataTypes, getOutputShapes through a test IExprBuilder, supportsFormatCombination,
// configurePlugin, getWorkspaceSize, getAliasedInput), the getFieldsToSerialize ->
// createPlugin(kRUNTIME) round trip, clone, and the refusal of bad fields (null plugin, logged).
// One row per plugin in main(): what its creator advertises and its checks; every creator the
// library registers must have a row.
// Usage: test_plugin_harness <path of the plugin library>. Also built under ASan+UBSan.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "plugin_test_util.h"

namespace {

using nvinfer1::DataType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using qwen35_trt::testing::TestExprBuilder;

const char* const kName = "Qwen35CausalConv1d";

// Records what the plugin logs (TensorRT's logger, as a host that hands one over).
class RecordingLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last = msg;
  }
  std::string last;
};

class Finder final : public nvinfer1::ILoggerFinder {
 public:
  explicit Finder(nvinfer1::ILogger* logger) : logger_(logger) {}
  nvinfer1::ILogger* findLogger() override { return logger_; }

 private:
  nvinfer1::ILogger* logger_;
};

struct PluginDeleter {
  void operator()(nvinfer1::IPluginV3* p) const { delete p; }
};
using PluginPtr = std::unique_ptr<nvinfer1::IPluginV3, PluginDeleter>;

PluginPtr create(nvinfer1::IPluginCreatorV3One* creator, const std::vector<PluginField>& fields,
                 nvinfer1::TensorRTPhase phase = nvinfer1::TensorRTPhase::kBUILD) {
  PluginFieldCollection fc{static_cast<int32_t>(fields.size()), fields.data()};
  return PluginPtr(creator->createPlugin("conv", &fc, phase));
}

nvinfer1::IPluginV3OneBuildV2* build_of(nvinfer1::IPluginV3* p) {
  return static_cast<nvinfer1::IPluginV3OneBuildV2*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
}
nvinfer1::IPluginV3OneRuntime* runtime_of(nvinfer1::IPluginV3* p) {
  return static_cast<nvinfer1::IPluginV3OneRuntime*>(
      p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
}
nvinfer1::IPluginV3OneCore* core_of(nvinfer1::IPluginV3* p) {
  return static_cast<nvinfer1::IPluginV3OneCore*>(p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
}

nvinfer1::Dims dims(std::initializer_list<int64_t> values) {
  nvinfer1::Dims d{};
  d.nbDims = static_cast<int32_t>(values.size());
  int32_t i = 0;
  for (int64_t v : values) d.d[i++] = v;
  return d;
}

// What every creator must advertise: its name, version "1", namespace "qwen35_trt" and its fields
// (names and types, in order). One row per plugin in main().
struct FieldSpec {
  const char* name;
  PluginFieldType type;
};
struct CreatorSpec {
  const char* plugin;
  std::vector<FieldSpec> fields;
};

void check_creator(nvinfer1::IPluginCreatorV3One* creator, const CreatorSpec& spec) {
  CHECK(std::string(creator->getPluginName()) == spec.plugin);
  CHECK(std::string(creator->getPluginVersion()) == "1");
  CHECK(std::string(creator->getPluginNamespace()) == "qwen35_trt");
  const PluginFieldCollection* names = creator->getFieldNames();
  const auto n = static_cast<int32_t>(spec.fields.size());
  CHECK_MSG(names != nullptr && names->nbFields == n, spec.plugin);
  if (names == nullptr || names->nbFields != n) return;
  for (int32_t i = 0; i < n; ++i) {
    CHECK_MSG(std::string(names->fields[i].name) == spec.fields[i].name && names->fields[i].type == spec.fields[i].type,
              std::string(spec.plugin) + " field " + std::to_string(i) + ": " + names->fields[i].name);
  }
}

// Fields the creator must refuse (no plugin) and the message it must log for them.
struct Refusal {
  std::vector<PluginField> fields;
  std::string expect;
};

using SetLoggerFinder = void (*)(nvinfer1::ILoggerFinder*);

void check_refusals(nvinfer1::IPluginCreatorV3One* creator, void* lib, const std::vector<Refusal>& cases) {
  auto set_finder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  CHECK(set_finder != nullptr);
  if (set_finder == nullptr) return;
  RecordingLogger logger;
  Finder finder(&logger);
  set_finder(&finder);
  for (const Refusal& c : cases) {
    logger.last.clear();
    PluginPtr p = create(creator, c.fields);
    CHECK(p == nullptr);
    CHECK_MSG(logger.last.find(c.expect) != std::string::npos, "logged: '" + logger.last + "', expected: " + c.expect);
  }
  set_finder(nullptr);
}

// The 6 inputs and 2 outputs with the dtypes of the contract and the given input dims.
std::vector<nvinfer1::DynamicPluginTensorDesc> descs(const std::vector<nvinfer1::Dims>& in) {
  const DataType types[] = {DataType::kBF16, DataType::kBF16, DataType::kBF16, DataType::kINT32,
                            DataType::kINT32, DataType::kBOOL, DataType::kBF16, DataType::kBF16};
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(8);
  for (int i = 0; i < 8; ++i) {
    d[i].desc.type = types[i];
    d[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc.dims = i < 6 ? in[i] : in[i == 6 ? 0 : 2];
    d[i].min = d[i].max = d[i].opt = d[i].desc.dims;
  }
  return d;
}

const int32_t kWidth4 = 4;
const char kSilu[] = "silu";
std::vector<PluginField> good_fields() {
  return {PluginField("width", &kWidth4, PluginFieldType::kINT32, 1),
          PluginField("activation", kSilu, PluginFieldType::kCHAR, 5)};
}

void test_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  PluginPtr plugin = create(creator, good_fields());
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK(std::string(core_of(plugin.get())->getPluginName()) == kName);
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());
  CHECK(build->getInterfaceInfo().major == 2);  // V2: the one with getAliasedInput
  CHECK(build->getNbOutputs() == 2);

  // Output dtypes; an input of another dtype is refused with an error.
  DataType in_types[] = {DataType::kBF16, DataType::kBF16, DataType::kBF16,
                         DataType::kINT32, DataType::kINT32, DataType::kBOOL};
  DataType out_types[2] = {DataType::kFLOAT, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 6) == 0);
  CHECK(out_types[0] == DataType::kBF16 && out_types[1] == DataType::kBF16);
  in_types[0] = DataType::kHALF;
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 6) != 0);
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 5) != 0);

  // Output shapes: y has x's dims, the pool output the pool's (dynamic dims pass through).
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  const nvinfer1::IDimensionExpr* S = eb.runtime();
  const nvinfer1::IDimensionExpr* B = eb.runtime();
  const nvinfer1::IDimensionExpr* B1 = eb.operation(nvinfer1::DimensionOperation::kSUM, *B, *eb.constant(1));
  nvinfer1::DimsExprs in[6]{};
  in[0].nbDims = 2, in[0].d[0] = T, in[0].d[1] = eb.constant(64);
  in[1].nbDims = 2, in[1].d[0] = eb.constant(64), in[1].d[1] = eb.constant(4);
  in[2].nbDims = 3, in[2].d[0] = S, in[2].d[1] = eb.constant(64), in[2].d[2] = eb.constant(3);
  in[3].nbDims = 1, in[3].d[0] = B;
  in[4].nbDims = 1, in[4].d[0] = B1;
  in[5].nbDims = 1, in[5].d[0] = B;
  nvinfer1::DimsExprs out[2]{};
  CHECK(build->getOutputShapes(in, 6, nullptr, 0, out, 2, eb) == 0);
  CHECK(out[0].nbDims == 2 && out[0].d[0] == T && out[0].d[1]->isConstant() && out[0].d[1]->getConstantValue() == 64);
  CHECK(out[1].nbDims == 3 && out[1].d[0] == S && out[1].d[2]->getConstantValue() == 3);
  in[1].d[1] = eb.constant(3);  // weight width 3 against the field's 4
  CHECK(build->getOutputShapes(in, 6, nullptr, 0, out, 2, eb) != 0);

  // Formats: the contract's dtypes, linear only.
  auto d = descs({dims({-1, 64}), dims({64, 4}), dims({-1, 64, 3}), dims({-1}), dims({-1}), dims({-1})});
  for (int32_t pos = 0; pos < 8; ++pos) CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 6, 2), std::to_string(pos));
  d[0].desc.type = DataType::kHALF;
  CHECK(!build->supportsFormatCombination(0, d.data(), 6, 2));
  d[0].desc.type = DataType::kBF16;
  d[5].desc.type = DataType::kINT32;
  CHECK(!build->supportsFormatCombination(5, d.data(), 6, 2));
  d[5].desc.type = DataType::kBOOL;
  d[6].desc.format = nvinfer1::TensorFormat::kHWC8;
  CHECK(!build->supportsFormatCombination(6, d.data(), 6, 2));
  d[6].desc.format = nvinfer1::TensorFormat::kLINEAR;
  CHECK(!build->supportsFormatCombination(8, d.data(), 6, 2));

  // configurePlugin: build-time dims (-1 where dynamic) and a contradiction.
  CHECK(build->configurePlugin(d.data(), 6, d.data() + 6, 2) == 0);
  auto bad = descs({dims({-1, 64}), dims({64, 4}), dims({-1, 64, 2}), dims({-1}), dims({-1}), dims({-1})});
  CHECK(build->configurePlugin(bad.data(), 6, bad.data() + 6, 2) != 0);
  CHECK(build->getWorkspaceSize(d.data(), 6, d.data() + 6, 2) == 0);
  CHECK(build->getAliasedInput(0) == -1);
  CHECK(build->getAliasedInput(1) == 2);

  // Runtime shapes.
  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = descs({dims({7, 64}), dims({64, 4}), dims({5, 64, 3}), dims({2}), dims({3}), dims({2})});
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 6, pd.data() + 6, 2) == 0);
  pd[4].dims = dims({2});
  CHECK(rt->onShapeChange(pd.data(), 6, pd.data() + 6, 2) != 0);

  // clone and attachToContext give independent plugins with the same identity.
  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && std::string(core_of(copy.get())->getPluginName()) == kName);
  PluginPtr attached(rt->attachToContext(nullptr));
  CHECK(attached != nullptr && build_of(attached.get())->getAliasedInput(1) == 2);
}

void test_serialisation_round_trip(nvinfer1::IPluginCreatorV3One* creator) {
  for (int32_t width = 2; width <= 8; ++width) {
    const std::vector<PluginField> fields = {PluginField("width", &width, PluginFieldType::kINT32, 1)};
    PluginPtr plugin = create(creator, fields);
    CHECK(plugin != nullptr);
    if (!plugin) continue;
    const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
    CHECK(stored != nullptr && stored->nbFields == 2);
    PluginPtr restored(creator->createPlugin("conv", stored, nvinfer1::TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr);
    if (!restored) continue;
    const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
    CHECK(again != nullptr && again->nbFields == 2 && again->fields[0].type == PluginFieldType::kINT32 &&
          *static_cast<const int32_t*>(again->fields[0].data) == width &&
          std::string(static_cast<const char*>(again->fields[1].data)) == "silu");
  }
}

void test_bad_fields(nvinfer1::IPluginCreatorV3One* creator, void* lib) {
  const float width_f = 4.0f;
  const int32_t nine = 9;
  const char relu[] = "relu";
  check_refusals(creator, lib, {
      {{}, "qwen35_trt::Qwen35CausalConv1d: field 'width': missing"},
      {{PluginField("width", &width_f, PluginFieldType::kFLOAT32, 1)}, "field 'width': expected one integer (INT32)"},
      {{PluginField("width", &nine, PluginFieldType::kINT32, 1)}, "in [2, 8], got 9"},
      {{PluginField("width", &kWidth4, PluginFieldType::kINT32, 1), PluginField("activation", relu, PluginFieldType::kCHAR, 5)},
       "field 'activation': expected a string (CHAR) of \"silu\", got \"relu\""},
      {{PluginField("width", &kWidth4, PluginFieldType::kINT32, 1), PluginField("bias", &nine, PluginFieldType::kINT32, 1)},
       "field 'bias': unknown"},
  });
  CHECK(creator->createPlugin("conv", nullptr, nvinfer1::TensorRTPhase::kBUILD) == nullptr);

  // A host whose findLogger() answers null (TensorRT-RTX 1.7 through 10.14 headers): the error
  // goes to stderr and nothing crashes; likewise with no finder at all.
  auto set_finder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  if (set_finder == nullptr) return;  // reported by check_refusals
  Finder null_finder(nullptr);
  set_finder(&null_finder);
  CHECK(create(creator, {}) == nullptr);
  set_finder(nullptr);
  CHECK(create(creator, {}) == nullptr);
}

// --- Qwen35GatedDeltaNet ------------------------------------------------------------------------

const char* const kGdnName = "Qwen35GatedDeltaNet";

// q, k, v, a, b, A_log, dt_bias, state_pool, slots, cu_seqlens, has_initial_state, o, state_pool.
std::vector<nvinfer1::DynamicPluginTensorDesc> gdn_descs(const std::vector<nvinfer1::Dims>& in,
                                                         const std::vector<nvinfer1::Dims>& in_max = {}) {
  const DataType types[] = {DataType::kBF16,  DataType::kBF16,  DataType::kBF16,  DataType::kBF16, DataType::kBF16,
                            DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32,
                            DataType::kINT32, DataType::kBOOL,  DataType::kBF16,  DataType::kFLOAT};
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(13);
  for (int i = 0; i < 13; ++i) {
    d[i].desc.type = types[i];
    d[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc.dims = i < 11 ? in[i] : in[i == 11 ? 2 : 7];
    d[i].min = d[i].opt = d[i].desc.dims;
    d[i].max = in_max.empty() ? d[i].desc.dims : in_max[i < 11 ? i : i == 11 ? 2 : 7];
  }
  return d;
}

std::vector<nvinfer1::Dims> gdn_dims(int64_t T, int64_t S, int64_t B) {
  return {dims({T, 16, 128}), dims({T, 16, 128}), dims({T, 32, 128}), dims({T, 32}),      dims({T, 32}), dims({32}),
          dims({32}),         dims({S, 32, 128, 128}), dims({B}),     dims({B < 0 ? -1 : B + 1}), dims({B})};
}

void test_gdn_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  PluginPtr plugin = create(creator, {});
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK(std::string(core_of(plugin.get())->getPluginName()) == kGdnName);
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());
  CHECK(build->getInterfaceInfo().major == 2);
  CHECK(build->getNbOutputs() == 2);

  DataType in_types[] = {DataType::kBF16,  DataType::kBF16,  DataType::kBF16,  DataType::kBF16,
                         DataType::kBF16,  DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT,
                         DataType::kINT32, DataType::kINT32, DataType::kBOOL};
  DataType out_types[2] = {DataType::kINT8, DataType::kINT8};
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 11) == 0);
  CHECK(out_types[0] == DataType::kBF16 && out_types[1] == DataType::kFLOAT);
  in_types[7] = DataType::kBF16;  // a bf16 state pool: the kernels keep the state in fp32
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 11) != 0);
  in_types[7] = DataType::kFLOAT;
  in_types[5] = DataType::kBF16;  // A_log as in the checkpoint: the graph widens it
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 11) != 0);
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 6) != 0);

  // Output shapes: o has v's [T, Hv, dv], the pool output the pool's.
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  const nvinfer1::IDimensionExpr* S = eb.runtime();
  const nvinfer1::IDimensionExpr* B = eb.runtime();
  const nvinfer1::IDimensionExpr* B1 = eb.operation(nvinfer1::DimensionOperation::kSUM, *B, *eb.constant(1));
  const nvinfer1::IDimensionExpr* c16 = eb.constant(16);
  const nvinfer1::IDimensionExpr* c32 = eb.constant(32);
  const nvinfer1::IDimensionExpr* c128 = eb.constant(128);
  nvinfer1::DimsExprs in[11]{};
  in[0].nbDims = 3, in[0].d[0] = T, in[0].d[1] = c16, in[0].d[2] = c128;
  in[1] = in[0];
  in[2].nbDims = 3, in[2].d[0] = T, in[2].d[1] = c32, in[2].d[2] = c128;
  in[3].nbDims = 2, in[3].d[0] = T, in[3].d[1] = c32;
  in[4] = in[3];
  in[5].nbDims = 1, in[5].d[0] = c32;
  in[6] = in[5];
  in[7].nbDims = 4, in[7].d[0] = S, in[7].d[1] = c32, in[7].d[2] = c128, in[7].d[3] = c128;
  in[8].nbDims = 1, in[8].d[0] = B;
  in[9].nbDims = 1, in[9].d[0] = B1;
  in[10] = in[8];
  nvinfer1::DimsExprs out[2]{};
  CHECK(build->getOutputShapes(in, 11, nullptr, 0, out, 2, eb) == 0);
  CHECK(out[0].nbDims == 3 && out[0].d[0] == T && out[0].d[1]->getConstantValue() == 32 &&
        out[0].d[2]->getConstantValue() == 128);
  CHECK(out[1].nbDims == 4 && out[1].d[0] == S && out[1].d[3]->getConstantValue() == 128);
  in[7].d[2] = eb.constant(64);  // the pool's dk against q's
  CHECK(build->getOutputShapes(in, 11, nullptr, 0, out, 2, eb) != 0);

  // Formats: the contract's dtypes, linear only.
  auto d = gdn_descs(gdn_dims(-1, -1, -1), gdn_dims(8192, 256, 256));
  for (int32_t pos = 0; pos < 13; ++pos) {
    CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 11, 2), std::to_string(pos));
  }
  d[7].desc.type = DataType::kBF16;
  CHECK(!build->supportsFormatCombination(7, d.data(), 11, 2));
  d[7].desc.type = DataType::kFLOAT;
  d[10].desc.type = DataType::kINT32;
  CHECK(!build->supportsFormatCombination(10, d.data(), 11, 2));
  d[10].desc.type = DataType::kBOOL;
  d[11].desc.format = nvinfer1::TensorFormat::kHWC8;
  CHECK(!build->supportsFormatCombination(11, d.data(), 11, 2));
  d[11].desc.format = nvinfer1::TensorFormat::kLINEAR;
  CHECK(!build->supportsFormatCombination(13, d.data(), 11, 2));

  CHECK(build->configurePlugin(d.data(), 11, d.data() + 11, 2) == 0);
  auto bad = gdn_descs(gdn_dims(-1, -1, -1));
  bad[2].desc.dims.d[2] = 48;  // dv not a multiple of 32
  CHECK(build->configurePlugin(bad.data(), 11, bad.data() + 11, 2) != 0);

  // Workspace: the chunked prefill's for the profile's largest (B, T, Hv), plus alignment slack;
  // none when only the recurrent kernel can run.
  const size_t ws = build->getWorkspaceSize(d.data(), 11, d.data() + 11, 2);
  CHECK_MSG(ws > 256 && ws < (size_t{1} << 31), std::to_string(ws));
  auto small = gdn_descs(gdn_dims(-1, -1, -1), gdn_dims(64, 4, 4));
  CHECK(build->getWorkspaceSize(small.data(), 11, small.data() + 11, 2) < ws);
  CHECK(build->getAliasedInput(0) == -1);
  CHECK(build->getAliasedInput(1) == 7);

  const char recurrent[] = "recurrent";
  PluginPtr rec = create(creator, {PluginField("algorithm", recurrent, PluginFieldType::kCHAR, 10)});
  CHECK(rec != nullptr);
  if (rec) CHECK(build_of(rec.get())->getWorkspaceSize(d.data(), 11, d.data() + 11, 2) == 0);

  // Runtime shapes.
  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = gdn_descs(gdn_dims(7, 5, 2));
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 11, pd.data() + 11, 2) == 0);
  pd[9].dims = dims({2});
  CHECK(rt->onShapeChange(pd.data(), 11, pd.data() + 11, 2) != 0);

  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && std::string(core_of(copy.get())->getPluginName()) == kGdnName);
  PluginPtr attached(rt->attachToContext(nullptr));
  CHECK(attached != nullptr && build_of(attached.get())->getAliasedInput(1) == 7);
}

void test_gdn_serialisation_round_trip(nvinfer1::IPluginCreatorV3One* creator) {
  const float scale = 0.25f;
  const int32_t off = 0;
  const char chunked[] = "chunked";
  const std::vector<std::vector<PluginField>> cases = {
      {},
      {PluginField("scale", &scale, PluginFieldType::kFLOAT32, 1), PluginField("use_qk_l2norm", &off, PluginFieldType::kINT32, 1),
       PluginField("algorithm", chunked, PluginFieldType::kCHAR, 8)},
  };
  for (const auto& fields : cases) {
    PluginPtr plugin = create(creator, fields);
    CHECK(plugin != nullptr);
    if (!plugin) continue;
    const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
    CHECK(stored != nullptr);
    if (stored == nullptr) continue;
    const int32_t n = stored->nbFields;
    CHECK(n == (fields.empty() ? 2 : 3));
    PluginPtr restored(creator->createPlugin("gdn", stored, nvinfer1::TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr);
    if (!restored) continue;
    const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
    CHECK(again != nullptr && again->nbFields == n);
    if (again == nullptr || again->nbFields != n) continue;
    const std::string alg = static_cast<const char*>(again->fields[n - 1].data);
    CHECK(alg == (fields.empty() ? "auto" : "chunked"));
    CHECK(*static_cast<const int32_t*>(again->fields[n - 2].data) == (fields.empty() ? 1 : 0));
    if (!fields.empty()) {
      CHECK(std::string(again->fields[0].name) == "scale" && *static_cast<const float*>(again->fields[0].data) == 0.25f);
    }
  }
}

void test_gdn_bad_fields(nvinfer1::IPluginCreatorV3One* creator, void* lib) {
  const float zero = 0.0f;
  const int32_t two = 2;
  const char fast[] = "fast";
  check_refusals(creator, lib, {
      {{PluginField("scale", &zero, PluginFieldType::kFLOAT32, 1)},
       "qwen35_trt::Qwen35GatedDeltaNet: field 'scale': expected one finite float (FLOAT32) in (0, 1e+06), got 0"},
      {{PluginField("scale", &two, PluginFieldType::kINT32, 1)}, "field 'scale'"},
      {{PluginField("use_qk_l2norm", &two, PluginFieldType::kINT32, 1)},
       "field 'use_qk_l2norm': expected one integer (INT32) in [0, 1], got 2"},
      {{PluginField("algorithm", fast, PluginFieldType::kCHAR, 5)}, "field 'algorithm': expected a string (CHAR)"},
      {{PluginField("chunk_size", &two, PluginFieldType::kINT32, 1)}, "field 'chunk_size': unknown"},
  });
}

// --- Qwen35Nvfp4Linear --------------------------------------------------------------------------

const char* const kLinearName = "Qwen35Nvfp4Linear";
const char kRowMajor[] = "row_major";
const char kSwizzled[] = "swizzled_128x4";
const char kFragments[] = "w4a16_fragments";
const char kW4A4[] = "w4a4";

std::vector<PluginField> linear_fields(bool swizzled, bool w4a4) {
  std::vector<PluginField> f = {swizzled ? PluginField("scale_layout", kSwizzled, PluginFieldType::kCHAR, 15)
                                         : PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10)};
  if (w4a4) f.emplace_back("activation", kW4A4, PluginFieldType::kCHAR, 5);
  return f;
}

// x, weight, weight_scale, weight_scale_2[, input_scale], y; `max_tokens` is the profile's
// largest T (x dim 0), 0 = as the dims.
std::vector<nvinfer1::DynamicPluginTensorDesc> linear_descs(const std::vector<nvinfer1::Dims>& in,
                                                            int64_t max_tokens = 0) {
  const DataType types[] = {DataType::kBF16, DataType::kINT8, DataType::kINT8, DataType::kFLOAT, DataType::kFLOAT};
  const int32_t n = static_cast<int32_t>(in.size());
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(n + 1);
  for (int32_t i = 0; i <= n; ++i) {
    d[i].desc.type = i < n ? types[i] : DataType::kBF16;
    d[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc.dims = i < n ? in[i] : dims({in[0].d[0], in[1].d[0]});
    d[i].min = d[i].opt = d[i].max = d[i].desc.dims;
  }
  if (max_tokens > 0) {
    d[0].max.d[0] = d[n].max.d[0] = max_tokens;
    d[0].min.d[0] = d[n].min.d[0] = 1;
  }
  return d;
}

void test_linear_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  PluginPtr plugin = create(creator, linear_fields(false, false));
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK(std::string(core_of(plugin.get())->getPluginName()) == kLinearName);
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());
  CHECK(build->getInterfaceInfo().major == 2);
  CHECK(build->getNbOutputs() == 1);

  // Dtypes: int8 weights and scales (raw bytes: E2M1 pairs, E4M3 scales), fp32 global; y bf16.
  DataType in_types[] = {DataType::kBF16, DataType::kINT8, DataType::kINT8, DataType::kFLOAT, DataType::kFLOAT};
  DataType out_type = DataType::kFLOAT;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 4) == 0);
  CHECK(out_type == DataType::kBF16);
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 5) != 0);  // input_scale needs "w4a4"
  in_types[0] = DataType::kHALF;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 4) != 0);
  in_types[0] = DataType::kBF16;
  in_types[2] = DataType::kFP8;  // the carrier is int8, not TensorRT's FP8
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 4) != 0);
  in_types[2] = DataType::kUINT8;  // TensorRT-RTX builds no plugin with a uint8 tensor
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 4) != 0);
  in_types[2] = DataType::kINT8;

  // Output shape: y [T, N], T dynamic, N from the weight.
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  nvinfer1::DimsExprs in[4]{};
  in[0].nbDims = 2, in[0].d[0] = T, in[0].d[1] = eb.constant(64);
  in[1].nbDims = 2, in[1].d[0] = eb.constant(48), in[1].d[1] = eb.constant(32);
  in[2].nbDims = 2, in[2].d[0] = eb.constant(48), in[2].d[1] = eb.constant(4);
  in[3].nbDims = 0;
  nvinfer1::DimsExprs out[1]{};
  CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 1, eb) == 0);
  CHECK(out[0].nbDims == 2 && out[0].d[0] == T && out[0].d[1]->isConstant() && out[0].d[1]->getConstantValue() == 48);
  in[2].d[0] = eb.constant(128);  // swizzled-sized scales under "row_major"
  CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 1, eb) != 0);
  in[2].d[0] = eb.constant(48);
  in[1].d[1] = eb.constant(16);  // weight K/2 against x's K
  CHECK(build->getOutputShapes(in, 4, nullptr, 0, out, 1, eb) != 0);

  // Formats.
  auto d = linear_descs({dims({-1, 64}), dims({48, 32}), dims({48, 4}), dims({})});
  for (int32_t pos = 0; pos < 5; ++pos) CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 4, 1), std::to_string(pos));
  d[1].desc.type = DataType::kUINT8;
  CHECK(!build->supportsFormatCombination(1, d.data(), 4, 1));
  d[1].desc.type = DataType::kINT8;
  d[3].desc.type = DataType::kBF16;
  CHECK(!build->supportsFormatCombination(3, d.data(), 4, 1));
  d[3].desc.type = DataType::kFLOAT;
  d[4].desc.format = nvinfer1::TensorFormat::kHWC8;
  CHECK(!build->supportsFormatCombination(4, d.data(), 4, 1));
  d[4].desc.format = nvinfer1::TensorFormat::kLINEAR;
  CHECK(!build->supportsFormatCombination(5, d.data(), 4, 1));
  CHECK(!build->supportsFormatCombination(0, d.data(), 5, 1));

  // configurePlugin, workspace (the W4A16 kernels need none), no aliasing.
  CHECK(build->configurePlugin(d.data(), 4, d.data() + 4, 1) == 0);
  auto bad = linear_descs({dims({-1, 64}), dims({48, 32}), dims({48, 4}), dims({2})});
  CHECK(build->configurePlugin(bad.data(), 4, bad.data() + 4, 1) != 0);
  auto profile = linear_descs({dims({-1, 64}), dims({48, 32}), dims({48, 4}), dims({})}, 4096);
  CHECK(build->getWorkspaceSize(profile.data(), 4, profile.data() + 4, 1) == 0);
  CHECK(build->getAliasedInput(0) == -1);

  // Runtime shapes.
  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = linear_descs({dims({7, 64}), dims({48, 32}), dims({48, 4}), dims({1})});
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 4, pd.data() + 4, 1) == 0);
  pd[0].dims = dims({7, 48});
  CHECK(rt->onShapeChange(pd.data(), 4, pd.data() + 4, 1) != 0);

  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && std::string(core_of(copy.get())->getPluginName()) == kLinearName);
  PluginPtr attached(rt->attachToContext(nullptr));
  CHECK(attached != nullptr && build_of(attached.get())->getNbOutputs() == 1);

  // w4a4 with swizzled scales: five inputs; the workspace is the launcher's for the profile's
  // largest T (0 when this build has no native path), padded for alignment, and grows with T.
  PluginPtr w4a4 = create(creator, linear_fields(true, true));
  CHECK(w4a4 != nullptr);
  if (!w4a4) return;
  nvinfer1::IPluginV3OneBuildV2* b4 = build_of(w4a4.get());
  auto d4 = linear_descs({dims({-1, 256}), dims({200, 128}), dims({256, 16}), dims({}), dims({1})}, 8192);
  for (int32_t pos = 0; pos < 6; ++pos) CHECK_MSG(b4->supportsFormatCombination(pos, d4.data(), 5, 1), std::to_string(pos));
  CHECK(b4->configurePlugin(d4.data(), 5, d4.data() + 5, 1) == 0);
  CHECK(b4->configurePlugin(d.data(), 4, d.data() + 4, 1) != 0);  // input_scale missing
  // w4a4 with row-major scales runs the W4A16 kernels: no workspace.
  PluginPtr w4a4_row = create(creator, linear_fields(false, true));
  CHECK(w4a4_row != nullptr);
  if (w4a4_row) {
    auto dr = linear_descs({dims({-1, 256}), dims({200, 128}), dims({200, 16}), dims({}), dims({1})}, 8192);
    CHECK(build_of(w4a4_row.get())->getWorkspaceSize(dr.data(), 5, dr.data() + 5, 1) == 0);
  }
  const size_t ws_big = b4->getWorkspaceSize(d4.data(), 5, d4.data() + 5, 1);
  auto d4_small = linear_descs({dims({-1, 256}), dims({200, 128}), dims({256, 16}), dims({}), dims({1})}, 16);
  const size_t ws_small = b4->getWorkspaceSize(d4_small.data(), 5, d4_small.data() + 5, 1);
  CHECK(ws_big >= ws_small);
  CHECK(ws_big == 0 || ws_big > 256);
  DataType t4[] = {DataType::kBF16, DataType::kINT8, DataType::kINT8, DataType::kFLOAT, DataType::kFLOAT};
  CHECK(b4->getOutputDataTypes(&out_type, 1, t4, 5) == 0 && out_type == DataType::kBF16);
}

void test_linear_serialisation_round_trip(nvinfer1::IPluginCreatorV3One* creator) {
  for (const bool swizzled : {false, true}) {
    for (const bool w4a4 : {false, true}) {
      PluginPtr plugin = create(creator, linear_fields(swizzled, w4a4));
      CHECK(plugin != nullptr);
      if (!plugin) continue;
      const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
      CHECK(stored != nullptr && stored->nbFields == 2);
      if (stored == nullptr) continue;
      PluginPtr restored(creator->createPlugin("linear", stored, nvinfer1::TensorRTPhase::kRUNTIME));
      CHECK(restored != nullptr);
      if (!restored) continue;
      const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
      CHECK(again != nullptr && again->nbFields == 2);
      if (again == nullptr || again->nbFields != 2) continue;
      CHECK(std::string(static_cast<const char*>(again->fields[0].data)) == (swizzled ? kSwizzled : kRowMajor));
      CHECK(std::string(static_cast<const char*>(again->fields[1].data)) == (w4a4 ? "w4a4" : "w4a16"));
      CHECK(build_of(restored.get())->supportsFormatCombination(
                0, linear_descs(w4a4 ? std::vector<nvinfer1::Dims>{dims({3, 64}), dims({8, 32}), dims({128, 4}), dims({}), dims({})}
                                     : std::vector<nvinfer1::Dims>{dims({3, 64}), dims({8, 32}), dims({8, 4}), dims({})})
                       .data(),
                w4a4 ? 5 : 4, 1));
    }
  }
  // sm_90 / sm_120 engines: "w4a16_fragments" is written back as it was given.
  PluginPtr plugin = create(creator, {PluginField("scale_layout", kFragments, PluginFieldType::kCHAR, 16)});
  CHECK(plugin != nullptr);
  if (!plugin) return;
  const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
  CHECK(stored != nullptr && stored->nbFields == 2);
  if (stored == nullptr || stored->nbFields != 2) return;
  PluginPtr restored(creator->createPlugin("linear", stored, nvinfer1::TensorRTPhase::kRUNTIME));
  CHECK(restored != nullptr);
  if (!restored) return;
  const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
  CHECK(again != nullptr && again->nbFields == 2);
  if (again == nullptr || again->nbFields != 2) return;
  CHECK(std::string(static_cast<const char*>(again->fields[0].data)) == kFragments);
  CHECK(std::string(static_cast<const char*>(again->fields[1].data)) == "w4a16");
}

void test_linear_bad_fields(nvinfer1::IPluginCreatorV3One* creator, void* lib) {
  const int32_t one = 1;
  const char col[] = "col_major";
  const char w8a8[] = "w8a8";
  check_refusals(creator, lib, {
      {{}, "qwen35_trt::Qwen35Nvfp4Linear: field 'scale_layout': missing"},
      {{PluginField("scale_layout", col, PluginFieldType::kCHAR, 10)},
       "field 'scale_layout': expected a string (CHAR) of \"row_major\", \"swizzled_128x4\", \"w4a16_fragments\", got "
       "\"col_major\""},
      {{PluginField("scale_layout", kFragments, PluginFieldType::kCHAR, 16), PluginField("activation", kW4A4, PluginFieldType::kCHAR, 5)},
       "field 'activation': \"w4a4\" needs the weights in scale_layout \"swizzled_128x4\""},
      {{PluginField("scale_layout", &one, PluginFieldType::kINT32, 1)}, "field 'scale_layout'"},
      {{PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10), PluginField("activation", w8a8, PluginFieldType::kCHAR, 5)},
       "field 'activation': expected a string (CHAR) of \"w4a16\", \"w4a4\", got \"w8a8\""},
      {{PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10), PluginField("bias", &one, PluginFieldType::kINT32, 1)},
       "field 'bias': unknown"},
  });
}

// --- Qwen35Nvfp4MoE -------------------------------------------------------------------------------

const char* const kMoeName = "Qwen35Nvfp4MoE";

// `shared_expert` null: the field left out (its default 0).
std::vector<PluginField> moe_fields(const int32_t* top_k, bool swizzled, bool w4a4,
                                    const int32_t* shared_expert = nullptr) {
  std::vector<PluginField> f = linear_fields(swizzled, w4a4);
  f.emplace(f.begin(), "top_k", top_k, PluginFieldType::kINT32, 1);
  if (shared_expert != nullptr) f.emplace_back("shared_expert", shared_expert, PluginFieldType::kINT32, 1);
  return f;
}

// Row-major MoE input dims (T tokens, E experts, hidden H, intermediate I).
std::vector<nvinfer1::Dims> moe_in_dims(int64_t T, int64_t E, int64_t H, int64_t I, bool w4a4 = false) {
  std::vector<nvinfer1::Dims> d = {dims({T, H}), dims({T, E}), dims({E, 2 * I, H / 2}), dims({E, 2 * I, H / 16}),
                                   dims({E, 2}), dims({E, H, I / 2}), dims({E, H, I / 16}), dims({E})};
  if (w4a4) {
    d.push_back(dims({E}));
    d.push_back(dims({E}));
  }
  return d;
}

std::vector<nvinfer1::DynamicPluginTensorDesc> moe_descs(const std::vector<nvinfer1::Dims>& in, int64_t max_tokens = 0,
                                                         DataType logits = DataType::kFLOAT) {
  const int32_t n = static_cast<int32_t>(in.size());
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(n + 1);
  for (int32_t i = 0; i <= n; ++i) {
    DataType t = DataType::kFLOAT;
    if (i == 0 || i == n) t = DataType::kBF16;
    if (i == 1) t = logits;
    if (i == 2 || i == 3 || i == 5 || i == 6) t = DataType::kINT8;
    d[i].desc.type = t;
    d[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc.dims = i < n ? in[i] : in[0];
    d[i].min = d[i].opt = d[i].max = d[i].desc.dims;
  }
  if (max_tokens > 0) {
    for (int32_t i : {0, 1, n}) {
      d[i].min.d[0] = 1;
      d[i].max.d[0] = max_tokens;
    }
  }
  return d;
}

// The shared expert's inputs (shared intermediate Is; scales as `swizzled` lays them out; the input
// scales with w4a4) appended to moe_in_dims' routed ones, and the dtypes of all of them.
std::vector<nvinfer1::Dims> moe_shared_in_dims(int64_t T, int64_t E, int64_t H, int64_t I, int64_t Is, bool swizzled,
                                               bool w4a4) {
  std::vector<nvinfer1::Dims> d = moe_in_dims(T, E, H, I, w4a4);
  const auto pad = [swizzled](int64_t v, int64_t to) { return swizzled ? (v + to - 1) / to * to : v; };
  if (swizzled) {
    d[3] = dims({E, pad(2 * I, 128), pad(H / 16, 4)});
    d[6] = dims({E, pad(H, 128), pad(I / 16, 4)});
  }
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{Is, H}, {Is, H}, {H, Is}}) {
    d.push_back(dims({rows, cols / 2}));
    d.push_back(dims({pad(rows, 128), pad(cols / 16, 4)}));
    d.push_back(dims({}));
    if (w4a4) d.push_back(dims({1}));
  }
  d.push_back(dims({1, H}));
  return d;
}

std::vector<DataType> moe_shared_types(bool w4a4) {
  std::vector<DataType> t = {DataType::kBF16, DataType::kFLOAT, DataType::kINT8, DataType::kINT8,
                             DataType::kFLOAT, DataType::kINT8, DataType::kINT8, DataType::kFLOAT};
  if (w4a4) t.insert(t.end(), {DataType::kFLOAT, DataType::kFLOAT});
  for (int32_t l = 0; l < 3; ++l) {
    t.insert(t.end(), {DataType::kINT8, DataType::kINT8, DataType::kFLOAT});
    if (w4a4) t.push_back(DataType::kFLOAT);
  }
  t.push_back(DataType::kBF16);
  return t;
}

// moe_descs with the shared expert's dtypes (moe_descs types by the routed positions only).
std::vector<nvinfer1::DynamicPluginTensorDesc> moe_shared_descs(const std::vector<nvinfer1::Dims>& in, bool w4a4,
                                                                int64_t max_tokens = 0) {
  std::vector<nvinfer1::DynamicPluginTensorDesc> d = moe_descs(in, max_tokens);
  const std::vector<DataType> types = moe_shared_types(w4a4);
  for (size_t i = 0; i < types.size(); ++i) d[i].desc.type = types[i];
  return d;
}

// The shared expert (field shared_expert = 1): 18 inputs (w4a16) or 23 (w4a4), their dtypes and
// shapes, and a workspace that also holds the shared expert's activations.
void test_moe_shared_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  const int32_t two = 2, one = 1;
  const int64_t E = 4, H = 64, I = 32, Is = 48;
  PluginPtr plugin = create(creator, moe_fields(&two, false, false, &one));
  CHECK(plugin != nullptr);
  if (!plugin) return;
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());

  std::vector<DataType> types = moe_shared_types(false);
  CHECK(types.size() == 18);
  DataType out_type = DataType::kFLOAT;
  CHECK(build->getOutputDataTypes(&out_type, 1, types.data(), 18) == 0 && out_type == DataType::kBF16);
  CHECK(build->getOutputDataTypes(&out_type, 1, types.data(), 8) != 0);  // the shared inputs left off
  for (const auto& [pos, wrong] : std::vector<std::pair<int32_t, DataType>>{
           {8, DataType::kUINT8}, {10, DataType::kBF16}, {16, DataType::kINT8}, {17, DataType::kFLOAT}}) {
    const DataType keep = types[pos];
    types[pos] = wrong;  // shared_gate_weight, its weight_scale_2, shared_down_weight_scale_2, the gate vector
    CHECK_MSG(build->getOutputDataTypes(&out_type, 1, types.data(), 18) != 0, std::to_string(pos));
    types[pos] = keep;
  }

  // Output shape: still hidden's; a shared expert of another H is refused.
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  const auto c = [&eb](int64_t v) { return eb.constant(v); };
  const auto consts = [&](nvinfer1::DimsExprs& e, const nvinfer1::Dims& d) {
    e.nbDims = d.nbDims;
    for (int32_t k = 0; k < d.nbDims; ++k) e.d[k] = d.d[k] < 0 ? T : c(d.d[k]);
  };
  const std::vector<nvinfer1::Dims> shape = moe_shared_in_dims(-1, E, H, I, Is, false, false);
  std::vector<nvinfer1::DimsExprs> in(18);
  for (int32_t i = 0; i < 18; ++i) consts(in[i], shape[i]);
  nvinfer1::DimsExprs out[1]{};
  CHECK(build->getOutputShapes(in.data(), 18, nullptr, 0, out, 1, eb) == 0);
  CHECK(out[0].nbDims == 2 && out[0].d[0] == T && out[0].d[1]->getConstantValue() == H);
  consts(in[17], dims({1, 2 * H}));  // the gate vector of another H
  CHECK(build->getOutputShapes(in.data(), 18, nullptr, 0, out, 1, eb) != 0);

  // Formats, configurePlugin and contradictions in the shared inputs.
  auto d = moe_shared_descs(shape, false, 8192);
  for (int32_t pos = 0; pos < 19; ++pos) {
    CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 18, 1), std::to_string(pos));
  }
  d[17].desc.type = DataType::kFLOAT;
  CHECK(!build->supportsFormatCombination(17, d.data(), 18, 1));
  d[17].desc.type = DataType::kBF16;
  CHECK(!build->supportsFormatCombination(19, d.data(), 18, 1));
  CHECK(!build->supportsFormatCombination(0, d.data(), 8, 1));  // a node without the shared inputs
  CHECK(build->configurePlugin(d.data(), 18, d.data() + 18, 1) == 0);
  auto bad = moe_shared_descs(shape, false);
  bad[11].desc.dims = dims({Is + 16, H / 2});  // shared_up_weight with another Is
  CHECK(build->configurePlugin(bad.data(), 18, bad.data() + 18, 1) != 0);
  auto routed = moe_descs(moe_in_dims(-1, E, H, I));
  CHECK(build->configurePlugin(routed.data(), 8, routed.data() + 8, 1) != 0);

  // Workspace: the routed experts' for the same profile plus at least the shared expert's
  // activations [T, Is] bf16 (the launcher reserves its output [T, H] either way), growing with Is.
  // A build with the native FP4 path also reserves the shared expert's quantized activations, so
  // only the lower bound holds for every build.
  PluginPtr routed_only = create(creator, moe_fields(&two, false, false));
  CHECK(routed_only != nullptr);
  if (!routed_only) return;
  auto r = moe_descs(moe_in_dims(-1, E, H, I), 8192);
  const size_t ws_routed = build_of(routed_only.get())->getWorkspaceSize(r.data(), 8, r.data() + 8, 1);
  const size_t ws_shared = build->getWorkspaceSize(d.data(), 18, d.data() + 18, 1);
  const size_t shared_bytes = size_t{8192} * Is * 2;
  CHECK_MSG(ws_shared >= ws_routed + shared_bytes, std::to_string(ws_routed) + " / " + std::to_string(ws_shared));
  auto wide = moe_shared_descs(moe_shared_in_dims(-1, E, H, I, 2 * Is, false, false), false, 8192);
  CHECK(build->getWorkspaceSize(wide.data(), 18, wide.data() + 18, 1) > ws_shared);

  // Runtime shapes.
  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = moe_shared_descs(moe_shared_in_dims(7, E, H, I, Is, false, false), false);
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 18, pd.data() + 18, 1) == 0);
  pd[16].dims = dims({2});  // shared_down_weight_scale_2 with two values
  CHECK(rt->onShapeChange(pd.data(), 18, pd.data() + 18, 1) != 0);
  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && build_of(copy.get())->configurePlugin(d.data(), 18, d.data() + 18, 1) == 0);

  // w4a4 with swizzled scales: 23 inputs, each shared linear with its input scale.
  PluginPtr w4a4 = create(creator, moe_fields(&two, true, true, &one));
  CHECK(w4a4 != nullptr);
  if (!w4a4) return;
  nvinfer1::IPluginV3OneBuildV2* b4 = build_of(w4a4.get());
  auto d4 = moe_shared_descs(moe_shared_in_dims(-1, E, H, I, Is, true, true), true, 512);
  CHECK(d4.size() == 24);
  for (int32_t pos = 0; pos < 24; ++pos) CHECK_MSG(b4->supportsFormatCombination(pos, d4.data(), 23, 1), std::to_string(pos));
  CHECK(b4->configurePlugin(d4.data(), 23, d4.data() + 23, 1) == 0);
  CHECK(b4->getWorkspaceSize(d4.data(), 23, d4.data() + 23, 1) > 256);
  CHECK(b4->configurePlugin(d.data(), 18, d.data() + 18, 1) != 0);  // w4a16's 18 inputs
  auto row = moe_shared_descs(moe_shared_in_dims(-1, E, H, I, Is, false, true), true, 512);
  CHECK(b4->configurePlugin(row.data(), 23, row.data() + 23, 1) != 0);  // row-major scales under swizzled_128x4
}

void test_moe_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  const int32_t two = 2;
  PluginPtr plugin = create(creator, moe_fields(&two, false, false));
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK(std::string(core_of(plugin.get())->getPluginName()) == kMoeName);
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());
  CHECK(build->getInterfaceInfo().major == 2);
  CHECK(build->getNbOutputs() == 1);

  // Dtypes: router logits fp32 or bf16; int8 bytes; fp32 globals; out bf16.
  DataType in_types[] = {DataType::kBF16, DataType::kFLOAT, DataType::kINT8, DataType::kINT8, DataType::kFLOAT,
                         DataType::kINT8, DataType::kINT8,  DataType::kFLOAT, DataType::kFLOAT, DataType::kFLOAT};
  DataType out_type = DataType::kFLOAT;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 8) == 0 && out_type == DataType::kBF16);
  in_types[1] = DataType::kBF16;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 8) == 0);
  in_types[1] = DataType::kHALF;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 8) != 0);
  in_types[1] = DataType::kFLOAT;
  in_types[5] = DataType::kUINT8;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 8) != 0);
  in_types[5] = DataType::kINT8;
  in_types[4] = DataType::kBF16;  // the globals stay fp32
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 8) != 0);
  in_types[4] = DataType::kFLOAT;
  CHECK(build->getOutputDataTypes(&out_type, 1, in_types, 10) != 0);  // input scales need "w4a4"

  // Output shape: out has hidden's dims (T dynamic).
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  const auto c = [&eb](int64_t v) { return eb.constant(v); };
  nvinfer1::DimsExprs in[8]{};
  const auto set = [](nvinfer1::DimsExprs& e, std::initializer_list<const nvinfer1::IDimensionExpr*> d) {
    e.nbDims = static_cast<int32_t>(d.size());
    int32_t i = 0;
    for (const auto* x : d) e.d[i++] = x;
  };
  set(in[0], {T, c(64)});
  set(in[1], {T, c(4)});
  set(in[2], {c(4), c(64), c(32)});
  set(in[3], {c(4), c(64), c(4)});
  set(in[4], {c(4), c(2)});
  set(in[5], {c(4), c(64), c(16)});
  set(in[6], {c(4), c(64), c(2)});
  set(in[7], {c(4)});
  nvinfer1::DimsExprs out[1]{};
  CHECK(build->getOutputShapes(in, 8, nullptr, 0, out, 1, eb) == 0);
  CHECK(out[0].nbDims == 2 && out[0].d[0] == T && out[0].d[1]->getConstantValue() == 64);
  set(in[1], {T, c(8)});  // 8 router logits for 4 experts
  CHECK(build->getOutputShapes(in, 8, nullptr, 0, out, 1, eb) != 0);

  // Formats.
  auto d = moe_descs(moe_in_dims(-1, 4, 64, 32));
  for (int32_t pos = 0; pos < 9; ++pos) CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 8, 1), std::to_string(pos));
  d[1].desc.type = DataType::kBF16;
  CHECK(build->supportsFormatCombination(1, d.data(), 8, 1));
  d[1].desc.type = DataType::kINT32;
  CHECK(!build->supportsFormatCombination(1, d.data(), 8, 1));
  d[1].desc.type = DataType::kFLOAT;
  d[0].desc.type = DataType::kFLOAT;
  CHECK(!build->supportsFormatCombination(0, d.data(), 8, 1));
  d[0].desc.type = DataType::kBF16;
  d[8].desc.format = nvinfer1::TensorFormat::kHWC8;
  CHECK(!build->supportsFormatCombination(8, d.data(), 8, 1));
  d[8].desc.format = nvinfer1::TensorFormat::kLINEAR;
  CHECK(!build->supportsFormatCombination(9, d.data(), 8, 1));

  // configurePlugin; workspace grows with the profile's largest T, padded for alignment.
  CHECK(build->configurePlugin(d.data(), 8, d.data() + 8, 1) == 0);
  auto bad = moe_descs(moe_in_dims(-1, 4, 64, 24));
  CHECK(build->configurePlugin(bad.data(), 8, bad.data() + 8, 1) != 0);
  auto small = moe_descs(moe_in_dims(-1, 4, 64, 32), 16);
  auto big = moe_descs(moe_in_dims(-1, 4, 64, 32), 8192);
  const size_t ws_small = build->getWorkspaceSize(small.data(), 8, small.data() + 8, 1);
  const size_t ws_big = build->getWorkspaceSize(big.data(), 8, big.data() + 8, 1);
  CHECK(ws_small > 256 && ws_big > ws_small);
  CHECK(build->getAliasedInput(0) == -1);

  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = moe_descs(moe_in_dims(7, 4, 64, 32));
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 8, pd.data() + 8, 1) == 0);
  pd[1].dims = dims({6, 4});
  CHECK(rt->onShapeChange(pd.data(), 8, pd.data() + 8, 1) != 0);

  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && std::string(core_of(copy.get())->getPluginName()) == kMoeName);
  PluginPtr attached(rt->attachToContext(nullptr));
  CHECK(attached != nullptr && build_of(attached.get())->getNbOutputs() == 1);

  // w4a4 with swizzled scales: ten inputs.
  PluginPtr w4a4 = create(creator, moe_fields(&two, true, true));
  CHECK(w4a4 != nullptr);
  if (!w4a4) return;
  auto sd = moe_in_dims(-1, 4, 64, 32, true);
  sd[3] = dims({4, 128, 4});
  sd[6] = dims({4, 128, 4});
  auto d4 = moe_descs(sd, 512);
  nvinfer1::IPluginV3OneBuildV2* b4 = build_of(w4a4.get());
  for (int32_t pos = 0; pos < 11; ++pos) CHECK_MSG(b4->supportsFormatCombination(pos, d4.data(), 10, 1), std::to_string(pos));
  CHECK(b4->configurePlugin(d4.data(), 10, d4.data() + 10, 1) == 0);
  CHECK(b4->configurePlugin(d.data(), 8, d.data() + 8, 1) != 0);
  CHECK(b4->getWorkspaceSize(d4.data(), 10, d4.data() + 10, 1) > 256);

  test_moe_shared_build_phase(creator);
}

void test_moe_serialisation_round_trip(nvinfer1::IPluginCreatorV3One* creator) {
  const int32_t one = 1, zero = 0;
  // shared_expert left out (written back as 0), given as 0 and as 1.
  for (const int32_t top_k : {1, 8, 32}) {
    for (const int32_t* shared : {static_cast<const int32_t*>(nullptr), &zero, &one}) {
      PluginPtr plugin = create(creator, moe_fields(&top_k, top_k == 8, top_k == 32, shared));
      CHECK(plugin != nullptr);
      if (!plugin) continue;
      const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
      CHECK(stored != nullptr && stored->nbFields == 4);
      if (stored == nullptr) continue;
      PluginPtr restored(creator->createPlugin("moe", stored, nvinfer1::TensorRTPhase::kRUNTIME));
      CHECK(restored != nullptr);
      if (!restored) continue;
      const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
      CHECK(again != nullptr && again->nbFields == 4);
      if (again == nullptr || again->nbFields != 4) continue;
      CHECK(*static_cast<const int32_t*>(again->fields[0].data) == top_k);
      CHECK(std::string(static_cast<const char*>(again->fields[1].data)) == (top_k == 8 ? kSwizzled : kRowMajor));
      CHECK(std::string(static_cast<const char*>(again->fields[2].data)) == (top_k == 32 ? "w4a4" : "w4a16"));
      CHECK(std::string(again->fields[3].name) == "shared_expert" && again->fields[3].type == PluginFieldType::kINT32 &&
            *static_cast<const int32_t*>(again->fields[3].data) == (shared == &one ? 1 : 0));
    }
  }
}

void test_moe_bad_fields(nvinfer1::IPluginCreatorV3One* creator, void* lib) {
  const int32_t two = 2, zero = 0;
  const float two_f = 2.0f;
  check_refusals(creator, lib, {
      {linear_fields(false, false), "qwen35_trt::Qwen35Nvfp4MoE: field 'top_k': missing"},
      {moe_fields(&zero, false, false), "field 'top_k': expected one integer (INT32) in [1, 32], got 0"},
      {{PluginField("top_k", &two_f, PluginFieldType::kFLOAT32, 1), PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10)},
       "field 'top_k': expected one integer (INT32) in [1, 32], got FLOAT32"},
      {{PluginField("top_k", &two, PluginFieldType::kINT32, 1)}, "field 'scale_layout': missing"},
      {{PluginField("top_k", &two, PluginFieldType::kINT32, 1), PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10),
        PluginField("shared_intermediate", &two, PluginFieldType::kINT32, 1)},
       "field 'shared_intermediate': unknown"},
      {moe_fields(&two, false, false, &two), "field 'shared_expert': expected one integer (INT32) in [0, 1], got 2"},
      {{PluginField("top_k", &two, PluginFieldType::kINT32, 1), PluginField("scale_layout", kRowMajor, PluginFieldType::kCHAR, 10),
        PluginField("shared_expert", &two_f, PluginFieldType::kFLOAT32, 1)},
       "field 'shared_expert': expected one integer (INT32) in [0, 1], got FLOAT32"},
  });
}

// --- Qwen35GatedAttention -------------------------------------------------------------------------

const char* const kAttentionName = "Qwen35GatedAttention";
// Qwen3.5-35B-A3B's attention: 16 query heads, 2 kv heads, head_dim 256, RoPE on 64 dims.
const int32_t kHeads = 16, kKvHeads = 2, kHeadDim = 256, kRotaryDim = 64;
const float kRopeTheta = 1.0e7f, kEps = 1.0e-6f;
const int64_t kBlockSize = 16;

// The six required fields, with `name` replaced by `replacement` (dropped when its name is null;
// appended when `name` is not among them).
std::vector<PluginField> attention_fields(const std::string& name = "", PluginField replacement = PluginField()) {
  std::vector<PluginField> f = {PluginField("num_heads", &kHeads, PluginFieldType::kINT32, 1),
                                PluginField("num_kv_heads", &kKvHeads, PluginFieldType::kINT32, 1),
                                PluginField("head_dim", &kHeadDim, PluginFieldType::kINT32, 1),
                                PluginField("rotary_dim", &kRotaryDim, PluginFieldType::kINT32, 1),
                                PluginField("rope_theta", &kRopeTheta, PluginFieldType::kFLOAT32, 1),
                                PluginField("eps", &kEps, PluginFieldType::kFLOAT32, 1)};
  if (name.empty()) return f;
  for (auto it = f.begin(); it != f.end(); ++it) {
    if (name == it->name) {
      if (replacement.name == nullptr) {
        f.erase(it);
      } else {
        *it = replacement;
      }
      return f;
    }
  }
  if (replacement.name != nullptr) f.push_back(replacement);
  return f;
}

// qg, k, v, q_norm_weight, k_norm_weight, kv_pool, block_tables, cu_seqlens, context_lens for T
// tokens, B sequences, N blocks, M blocks per sequence (-1: dynamic).
std::vector<nvinfer1::Dims> attention_dims(int64_t T, int64_t B, int64_t N, int64_t M) {
  return {dims({T, kHeads * 2 * kHeadDim}), dims({T, kKvHeads * kHeadDim}), dims({T, kKvHeads * kHeadDim}),
          dims({kHeadDim}), dims({kHeadDim}), dims({N, 2, kKvHeads, kBlockSize, kHeadDim}), dims({B, M}),
          dims({B < 0 ? -1 : B + 1}), dims({B})};
}

// The 9 inputs and 2 outputs with the contract's dtypes; `max_tokens` > 0 makes T range over
// [1, max_tokens] in the profile (min / max of qg, k, v and out).
std::vector<nvinfer1::DynamicPluginTensorDesc> attention_descs(const std::vector<nvinfer1::Dims>& in,
                                                               int64_t max_tokens = 0) {
  std::vector<nvinfer1::DynamicPluginTensorDesc> d(11);
  for (int32_t i = 0; i < 11; ++i) {
    d[i].desc.type = i >= 6 && i <= 8 ? DataType::kINT32 : DataType::kBF16;
    d[i].desc.format = nvinfer1::TensorFormat::kLINEAR;
    d[i].desc.dims = i < 9 ? in[i] : i == 9 ? dims({in[0].d[0], kHeads * kHeadDim}) : in[5];
    d[i].min = d[i].opt = d[i].max = d[i].desc.dims;
  }
  if (max_tokens > 0) {
    for (int32_t i : {0, 1, 2, 9}) {
      d[i].min.d[0] = 1;
      d[i].max.d[0] = max_tokens;
    }
  }
  return d;
}

void test_attention_build_phase(nvinfer1::IPluginCreatorV3One* creator) {
  PluginPtr plugin = create(creator, attention_fields());
  CHECK(plugin != nullptr);
  if (!plugin) return;
  CHECK(std::string(core_of(plugin.get())->getPluginName()) == kAttentionName);
  nvinfer1::IPluginV3OneBuildV2* build = build_of(plugin.get());
  CHECK(build->getInterfaceInfo().major == 2);
  CHECK(build->getNbOutputs() == 2);

  // Dtypes: bf16 activations, weights and pool, int32 indices; both outputs bf16.
  DataType in_types[] = {DataType::kBF16, DataType::kBF16,  DataType::kBF16,  DataType::kBF16, DataType::kBF16,
                         DataType::kBF16, DataType::kINT32, DataType::kINT32, DataType::kINT32};
  DataType out_types[2] = {DataType::kFLOAT, DataType::kFLOAT};
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 9) == 0);
  CHECK(out_types[0] == DataType::kBF16 && out_types[1] == DataType::kBF16);
  in_types[0] = DataType::kHALF;
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 9) != 0);
  in_types[0] = DataType::kBF16;
  in_types[5] = DataType::kFLOAT;  // an fp32 pool: the cache is bf16
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 9) != 0);
  in_types[5] = DataType::kBF16;
  in_types[6] = DataType::kINT64;  // ONNX's default index type: the graph casts to int32
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 9) != 0);
  in_types[6] = DataType::kINT32;
  CHECK(build->getOutputDataTypes(out_types, 2, in_types, 8) != 0);

  // Output shapes: out [T, nh * hd] (T dynamic, the width a constant from the fields); the pool
  // output is the pool.
  TestExprBuilder eb;
  const nvinfer1::IDimensionExpr* T = eb.runtime();
  const nvinfer1::IDimensionExpr* N = eb.runtime();
  const nvinfer1::IDimensionExpr* B = eb.runtime();
  const nvinfer1::IDimensionExpr* B1 = eb.operation(nvinfer1::DimensionOperation::kSUM, *B, *eb.constant(1));
  const auto c = [&eb](int64_t v) { return eb.constant(v); };
  const auto set = [](nvinfer1::DimsExprs& e, std::initializer_list<const nvinfer1::IDimensionExpr*> d) {
    e.nbDims = static_cast<int32_t>(d.size());
    int32_t i = 0;
    for (const auto* x : d) e.d[i++] = x;
  };
  nvinfer1::DimsExprs in[9]{};
  set(in[0], {T, c(kHeads * 2 * kHeadDim)});
  set(in[1], {T, c(kKvHeads * kHeadDim)});
  in[2] = in[1];
  set(in[3], {c(kHeadDim)});
  in[4] = in[3];
  set(in[5], {N, c(2), c(kKvHeads), c(kBlockSize), c(kHeadDim)});
  set(in[6], {B, c(8)});
  set(in[7], {B1});
  set(in[8], {B});
  nvinfer1::DimsExprs out[2]{};
  CHECK(build->getOutputShapes(in, 9, nullptr, 0, out, 2, eb) == 0);
  CHECK(out[0].nbDims == 2 && out[0].d[0] == T && out[0].d[1]->isConstant() &&
        out[0].d[1]->getConstantValue() == kHeads * kHeadDim);
  CHECK(out[1].nbDims == 5 && out[1].d[0] == N && out[1].d[3]->getConstantValue() == kBlockSize &&
        out[1].d[4]->getConstantValue() == kHeadDim);
  set(in[0], {T, c(kHeads * kHeadDim)});  // qg without the gate half
  CHECK(build->getOutputShapes(in, 9, nullptr, 0, out, 2, eb) != 0);
  set(in[0], {T, c(kHeads * 2 * kHeadDim)});
  set(in[5], {N, c(2), c(kKvHeads), c(kBlockSize), c(128)});  // the pool's head_dim against the field's
  CHECK(build->getOutputShapes(in, 9, nullptr, 0, out, 2, eb) != 0);

  // Formats: the contract's dtypes, linear only.
  auto d = attention_descs(attention_dims(-1, -1, -1, -1), 8192);
  for (int32_t pos = 0; pos < 11; ++pos) CHECK_MSG(build->supportsFormatCombination(pos, d.data(), 9, 2), std::to_string(pos));
  d[0].desc.type = DataType::kHALF;
  CHECK(!build->supportsFormatCombination(0, d.data(), 9, 2));
  d[0].desc.type = DataType::kBF16;
  d[6].desc.type = DataType::kINT64;
  CHECK(!build->supportsFormatCombination(6, d.data(), 9, 2));
  d[6].desc.type = DataType::kINT32;
  d[10].desc.type = DataType::kFLOAT;
  CHECK(!build->supportsFormatCombination(10, d.data(), 9, 2));
  d[10].desc.type = DataType::kBF16;
  d[9].desc.format = nvinfer1::TensorFormat::kHWC8;
  CHECK(!build->supportsFormatCombination(9, d.data(), 9, 2));
  d[9].desc.format = nvinfer1::TensorFormat::kLINEAR;
  CHECK(!build->supportsFormatCombination(11, d.data(), 9, 2));

  // configurePlugin (dims -1 where dynamic) and a contradiction.
  CHECK(build->configurePlugin(d.data(), 9, d.data() + 9, 2) == 0);
  auto bad = attention_descs(attention_dims(-1, -1, -1, -1));
  bad[1].desc.dims.d[1] = kHeadDim;  // k with one kv head's width
  CHECK(build->configurePlugin(bad.data(), 9, bad.data() + 9, 2) != 0);

  // Workspace: the normalised queries [max T, nh, hd] bf16 (rounded up to 256 bytes) plus 256 for
  // the alignment; it grows with the profile's largest T.
  const size_t ws = build->getWorkspaceSize(d.data(), 9, d.data() + 9, 2);
  const size_t queries = size_t{8192} * kHeads * kHeadDim * 2;
  CHECK_MSG(ws >= queries + 256 && ws < queries + 512, std::to_string(ws));
  auto small = attention_descs(attention_dims(-1, -1, -1, -1), 16);
  CHECK(build->getWorkspaceSize(small.data(), 9, small.data() + 9, 2) < ws);
  CHECK(build->getAliasedInput(0) == -1);
  CHECK(build->getAliasedInput(1) == 5);

  // Runtime shapes.
  nvinfer1::IPluginV3OneRuntime* rt = runtime_of(plugin.get());
  auto concrete = attention_descs(attention_dims(7, 2, 64, 8));
  std::vector<nvinfer1::PluginTensorDesc> pd;
  for (const auto& x : concrete) pd.push_back(x.desc);
  CHECK(rt->onShapeChange(pd.data(), 9, pd.data() + 9, 2) == 0);
  pd[7].dims = dims({2});  // cu_seqlens with B entries
  CHECK(rt->onShapeChange(pd.data(), 9, pd.data() + 9, 2) != 0);
  pd[7].dims = dims({3});
  pd[0].dims = dims({1, kHeads * 2 * kHeadDim});  // T = 1 < B = 2
  pd[1].dims = pd[2].dims = dims({1, kKvHeads * kHeadDim});
  CHECK(rt->onShapeChange(pd.data(), 9, pd.data() + 9, 2) != 0);

  PluginPtr copy(plugin->clone());
  CHECK(copy != nullptr && std::string(core_of(copy.get())->getPluginName()) == kAttentionName);
  PluginPtr attached(rt->attachToContext(nullptr));
  CHECK(attached != nullptr && build_of(attached.get())->getAliasedInput(1) == 5);
}

void test_attention_serialisation_round_trip(nvinfer1::IPluginCreatorV3One* creator) {
  const float scale = 0.125f, zero = 0.0f;
  // No scale (the default head_dim ** -0.5 = 1/16, serialised explicitly); a given scale and eps = 0.
  const std::vector<std::vector<PluginField>> cases = {
      attention_fields(),
      [&] {
        auto f = attention_fields("eps", PluginField("eps", &zero, PluginFieldType::kFLOAT32, 1));
        f.emplace_back("scale", &scale, PluginFieldType::kFLOAT32, 1);
        return f;
      }(),
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    PluginPtr plugin = create(creator, cases[i]);
    CHECK(plugin != nullptr);
    if (!plugin) continue;
    const PluginFieldCollection* stored = runtime_of(plugin.get())->getFieldsToSerialize();
    CHECK(stored != nullptr && stored->nbFields == 7);
    if (stored == nullptr) continue;
    PluginPtr restored(creator->createPlugin("attention", stored, nvinfer1::TensorRTPhase::kRUNTIME));
    CHECK(restored != nullptr);
    if (!restored) continue;
    const PluginFieldCollection* again = runtime_of(restored.get())->getFieldsToSerialize();
    CHECK(again != nullptr && again->nbFields == 7);
    if (again == nullptr || again->nbFields != 7) continue;
    const auto i32 = [&](int k) { return *static_cast<const int32_t*>(again->fields[k].data); };
    const auto f32 = [&](int k) { return *static_cast<const float*>(again->fields[k].data); };
    CHECK(i32(0) == kHeads && i32(1) == kKvHeads && i32(2) == kHeadDim && i32(3) == kRotaryDim);
    CHECK(f32(4) == kRopeTheta && f32(5) == (i == 0 ? kEps : 0.0f));
    CHECK(std::string(again->fields[6].name) == "scale" && again->fields[6].type == PluginFieldType::kFLOAT32 &&
          f32(6) == (i == 0 ? 0.0625f : 0.125f));
  }
}

void test_attention_bad_fields(nvinfer1::IPluginCreatorV3One* creator, void* lib) {
  const int32_t hd48 = 48, three = 3, odd = 63, one = 1;
  const float neg = -1.0f, zero = 0.0f;
  check_refusals(creator, lib, {
      {{}, "qwen35_trt::Qwen35GatedAttention: field 'num_heads': missing"},
      {attention_fields("eps", PluginField()), "field 'eps': missing (expected one finite float (FLOAT32) in [0, inf))"},
      {attention_fields("head_dim", PluginField("head_dim", &hd48, PluginFieldType::kINT32, 1)),
       "field 'head_dim': expected a multiple of 32 in [32, 256]"},
      {attention_fields("num_kv_heads", PluginField("num_kv_heads", &three, PluginFieldType::kINT32, 1)),
       "field 'num_kv_heads': must divide num_heads = 16, got 3"},
      {attention_fields("rotary_dim", PluginField("rotary_dim", &odd, PluginFieldType::kINT32, 1)),
       "field 'rotary_dim': expected an even integer in [0, head_dim = 256]"},
      {attention_fields("rope_theta", PluginField("rope_theta", &one, PluginFieldType::kINT32, 1)),
       "field 'rope_theta': expected one finite float (FLOAT32) in (0, inf), got INT32"},
      {attention_fields("eps", PluginField("eps", &neg, PluginFieldType::kFLOAT32, 1)),
       "field 'eps': expected one finite float (FLOAT32) in [0, inf), got -1"},
      {attention_fields("scale", PluginField("scale", &zero, PluginFieldType::kFLOAT32, 1)),
       "field 'scale': expected one finite float (FLOAT32) in (0, inf), got 0"},
      {attention_fields("block_size", PluginField("block_size", &one, PluginFieldType::kINT32, 1)),
       "field 'block_size': unknown"},
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <libqwen35_trt_plugins.so>\n", argv[0]);
    return 2;
  }
  using Creator = nvinfer1::IPluginCreatorV3One;
  constexpr PluginFieldType kInt = PluginFieldType::kINT32, kFloat = PluginFieldType::kFLOAT32,
                            kChar = PluginFieldType::kCHAR;
  // One row per plugin of the library: what its creator advertises and the checks it gets.
  struct PluginChecks {
    CreatorSpec creator;
    void (*build_phase)(Creator*);
    void (*serialisation_round_trip)(Creator*);
    void (*bad_fields)(Creator*, void*);
  };
  const std::vector<PluginChecks> plugins = {
      {{kName, {{"width", kInt}, {"activation", kChar}}}, test_build_phase, test_serialisation_round_trip,
       test_bad_fields},
      {{kGdnName, {{"scale", kFloat}, {"use_qk_l2norm", kInt}, {"algorithm", kChar}}}, test_gdn_build_phase,
       test_gdn_serialisation_round_trip, test_gdn_bad_fields},
      {{kLinearName, {{"scale_layout", kChar}, {"activation", kChar}}}, test_linear_build_phase,
       test_linear_serialisation_round_trip, test_linear_bad_fields},
      {{kMoeName, {{"top_k", kInt}, {"scale_layout", kChar}, {"activation", kChar}, {"shared_expert", kInt}}},
       test_moe_build_phase,
       test_moe_serialisation_round_trip, test_moe_bad_fields},
      {{kAttentionName,
        {{"num_heads", kInt}, {"num_kv_heads", kInt}, {"head_dim", kInt}, {"rotary_dim", kInt}, {"rope_theta", kFloat},
         {"eps", kFloat}, {"scale", kFloat}}},
       test_attention_build_phase, test_attention_serialisation_round_trip, test_attention_bad_fields},
  };
  qwen35_trt::testing::load_creator(argv[1], kName);  // loads the library (exits when it cannot)
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);  // already loaded: a second handle
  // Every creator the library registers has a row above.
  int32_t count = 0;
  reinterpret_cast<qwen35_trt::testing::GetCreators>(dlsym(lib, "getCreators"))(count);
  CHECK_MSG(count == static_cast<int32_t>(plugins.size()), std::to_string(count) + " creators");
  for (const PluginChecks& p : plugins) {
    Creator* creator = qwen35_trt::testing::load_creator(argv[1], p.creator.plugin);
    check_creator(creator, p.creator);
    p.build_phase(creator);
    p.serialisation_round_trip(creator);
    p.bad_fields(creator, lib);
  }
  return qwen35_trt::test::report();
}
