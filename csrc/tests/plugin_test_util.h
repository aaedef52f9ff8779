// Shared by the plugin ctests: load libqwen35_trt_plugins.so the way TensorRT does (dlopen +
// getCreators), and an IExprBuilder / IDimensionExpr that needs no TensorRT library.
//
// TensorRT's IExprBuilder and IDimensionExpr are non-virtual forwarders to a protected
// pure-virtual implementation object (apiv::VExprBuilder / apiv::VDimensionExpr, NvInferImpl.h);
// the classes below supply one that models constants and unknown (runtime) dimensions.
#pragma once

#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace qwen35_trt::testing {

using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);

// The creator `name` of the library at `path`; exits on failure (nothing to test without it).
inline nvinfer1::IPluginCreatorV3One* load_creator(const char* path, const char* name) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
    std::exit(1);
  }
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  if (get_creators == nullptr) {
    std::fprintf(stderr, "%s exports no getCreators\n", path);
    std::exit(1);
  }
  int32_t count = 0;
  nvinfer1::IPluginCreatorInterface* const* creators = get_creators(count);
  for (int32_t i = 0; i < count; ++i) {
    auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
    if (std::string(creators[i]->getInterfaceInfo().kind) == "PLUGIN CREATOR_V3ONE" &&
        std::string(c->getPluginName()) == name) {
      return c;
    }
  }
  std::fprintf(stderr, "%s has no creator %s\n", path, name);
  std::exit(1);
}

class TestDimExpr;

class TestDimImpl final : public nvinfer1::apiv::VDimensionExpr {
 public:
  TestDimImpl(bool constant, int64_t value) : constant_(constant), value_(value) {}
  bool isConstant() const override { return constant_; }
  int64_t getConstantValue() const override { return constant_ ? value_ : -1; }
  bool isSizeTensor() const override { return false; }

 private:
  bool constant_;
  int64_t value_;
};

class TestDimExpr final : public nvinfer1::IDimensionExpr {
 public:
  TestDimExpr(bool constant, int64_t value) : impl_(constant, value) { mImpl = &impl_; }
  ~TestDimExpr() noexcept override = default;

 private:
  TestDimImpl impl_;
};

class TestExprBuilderImpl final : public nvinfer1::apiv::VExprBuilder {
 public:
  const nvinfer1::IDimensionExpr* constant(int64_t value) override { return make(true, value); }
  const nvinfer1::IDimensionExpr* operation(nvinfer1::DimensionOperation op, const nvinfer1::IDimensionExpr& a,
                                            const nvinfer1::IDimensionExpr& b) override {
    if (!a.isConstant() || !b.isConstant()) return make(false, -1);
    const int64_t x = a.getConstantValue();
    const int64_t y = b.getConstantValue();
    switch (op) {
      case nvinfer1::DimensionOperation::kSUM: return make(true, x + y);
      case nvinfer1::DimensionOperation::kPROD: return make(true, x * y);
      case nvinfer1::DimensionOperation::kSUB: return make(true, x - y);
      case nvinfer1::DimensionOperation::kMAX: return make(true, x > y ? x : y);
      case nvinfer1::DimensionOperation::kMIN: return make(true, x < y ? x : y);
      default: return make(false, -1);
    }
  }
  const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t, const nvinfer1::IDimensionExpr&,
                                                    const nvinfer1::IDimensionExpr&) override {
    return nullptr;  // no plugin here has data-dependent output shapes
  }
  // A dimension unknown until run time (a dynamic token or sequence count).
  const nvinfer1::IDimensionExpr* runtime() { return make(false, -1); }

 private:
  const nvinfer1::IDimensionExpr* make(bool constant, int64_t value) {
    exprs_.emplace_back(constant, value);  // deque: addresses stay valid
    return &exprs_.back();
  }
  std::deque<TestDimExpr> exprs_;
};

class TestExprBuilder final : public nvinfer1::IExprBuilder {
 public:
  TestExprBuilder() { mImpl = &impl_; }
  ~TestExprBuilder() noexcept override = default;
  const nvinfer1::IDimensionExpr* runtime() { return impl_.runtime(); }

 private:
  TestExprBuilderImpl impl_;
};

}  // namespace qwen35_trt::testing
