// TensorRT plugin "PoolHead" (version 1): the fused CUDA kernel of kernels/pool_head/pool_head.cu.
// UNVERIFIED against a real TensorRT (see kernels/tensorrt/plugin_common.h).
#pragma once

#include "tensorrt/plugin_common.h"

namespace edgetl::trt {

class PoolHeadPlugin : public PluginBase<PoolHeadPlugin> {
public:
    static constexpr char const* kName = "PoolHead";
    static constexpr int32_t kNbOutputs = 2;
    static std::vector<nvinfer1::PluginField> fieldNames() { return {}; }  // no attributes
    static PoolHeadPlugin* create(nvinfer1::PluginFieldCollection const*) { return new PoolHeadPlugin(); }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    EDGETL_TRT_PLUGIN_METHODS
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override { return serialize({}); }
};

using PoolHeadPluginCreator = PluginCreator<PoolHeadPlugin>;

}  // namespace edgetl::trt
