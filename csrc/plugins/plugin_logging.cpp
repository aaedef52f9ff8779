// Error reporting (see plugin_logging.h).
#include "plugin_logging.h"

#include <NvInferRuntime.h>

#include <atomic>
#include <cstdio>

namespace qwen35_trt::plugins {
namespace {
std::atomic<nvinfer1::ILoggerFinder*> g_finder{nullptr};
}

void set_logger_finder(nvinfer1::ILoggerFinder* finder) { g_finder.store(finder); }

void log_error(const char* plugin, const std::string& message) {
  const std::string line = std::string("qwen35_trt::") + plugin + ": " + message;
  // A host whose ILoggerFinder has another layout than these headers' (TensorRT-RTX 1.7 under
  // TensorRT 10.14 headers) answers null here: then the message goes to stderr.
  nvinfer1::ILoggerFinder* finder = g_finder.load();
  nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) {
    logger->log(nvinfer1::ILogger::Severity::kERROR, line.c_str());
  } else {
    std::fprintf(stderr, "[qwen35_trt plugins] ERROR: %s\n", line.c_str());
  }
}

}  // namespace qwen35_trt::plugins
