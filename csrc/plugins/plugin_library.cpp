// The entry points TensorRT looks up when it loads libqwen35_trt_plugins.so (load_library,
// trtexec --dynamicPlugins/--staticPlugins). Only these two symbols are exported (exports.map):
// the library registers its creators through getCreators rather than REGISTER_TENSORRT_PLUGIN,
// which would need libnvinfer at link time.
#include <NvInferRuntime.h>

#include "causal_conv1d_plugin.h"
#include "gated_attention_plugin.h"
#include "gdn_plugin.h"
#include "nvfp4_linear_plugin.h"
#include "nvfp4_moe_plugin.h"
#include "plugin_logging.h"

extern "C" {

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) { qwen35_trt::plugins::set_logger_finder(finder); }

nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static qwen35_trt::plugins::CausalConv1dCreator causal_conv1d;
  static qwen35_trt::plugins::GatedDeltaNetCreator gated_delta_net;
  static qwen35_trt::plugins::Nvfp4LinearCreator nvfp4_linear;
  static qwen35_trt::plugins::Nvfp4MoeCreator nvfp4_moe;
  static qwen35_trt::plugins::GatedAttentionCreator gated_attention;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&causal_conv1d, &gated_delta_net, &nvfp4_linear,
                                                                &nvfp4_moe, &gated_attention};
  nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
  return creators;
}

}  // extern "C"
