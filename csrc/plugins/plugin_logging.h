// Error reporting of the plugin library: TensorRT's logger when the host gives one, else stderr.
#pragma once

#include <string>

namespace nvinfer1 {
class ILoggerFinder;
}

namespace qwen35_trt::plugins {

// Called by the exported setLoggerFinder; may be null.
void set_logger_finder(nvinfer1::ILoggerFinder* finder);

// Logs "qwen35_trt::<plugin>: <message>" as an error.
void log_error(const char* plugin, const std::string& message);

}  // namespace qwen35_trt::plugins
