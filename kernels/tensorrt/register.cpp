// The TensorRT registration table: the entry points TensorRT 10 looks up when it loads a plugin library
// (IPluginRegistry::loadLibrary, `trtexec --dynamicPlugins=libedgetl_tensorrt.so`, or a plan's serialized
// plugin libraries). UNVERIFIED against a real TensorRT (see plugin_common.h).
#include "tensorrt/plugins.h"

#define EDGETL_TRT_API extern "C" __attribute__((visibility("default")))

EDGETL_TRT_API void setLoggerFinder(nvinfer1::ILoggerFinder*) {}  // the plugins log nothing

EDGETL_TRT_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static edgetl::trt::PreprocessPluginCreator preprocess;
    static edgetl::trt::PoolHeadPluginCreator pool_head;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&preprocess, &pool_head};
    nbCreators = 2;
    return creators;
}
