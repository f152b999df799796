// edgetl's TensorRT plugins (IPluginV3), declared in one place; each is defined beside its CUDA kernel
// (kernels/<op>/tensorrt_plugin.cpp) and registered by kernels/tensorrt/register.cpp.
// UNVERIFIED against a real TensorRT (see kernels/tensorrt/plugin_common.h).
#pragma once

#include "tensorrt/plugin_common.h"

namespace edgetl::trt {

// "PoolHead" (version 1): the fused CUDA kernel of kernels/pool_head/pool_head.cu.
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

// "Preprocess" (version 1): the fused CUDA kernel of kernels/preprocess/preprocess.cu. Open question for the
// first run on a Jetson: TensorRT documents kUINT8 as unsupported for plugin *outputs*; if it also refuses the
// uint8 frames input, this plugin needs a float input variant behind an ONNX Cast.
class PreprocessPlugin : public PluginBase<PreprocessPlugin> {
public:
    static constexpr char const* kName = "Preprocess";
    static constexpr int32_t kNbOutputs = 1;
    static std::vector<nvinfer1::PluginField> fieldNames();
    static PreprocessPlugin* create(nvinfer1::PluginFieldCollection const* fc);

    PreprocessPlugin(std::vector<int64_t> size, std::vector<float> scale, std::vector<float> bias,
                     std::vector<int64_t> channels);

    EDGETL_TRT_PLUGIN_METHODS
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    std::vector<int64_t> m_size, m_channels;
    std::vector<float> m_scale, m_bias;
    std::vector<int32_t> m_size32, m_channels32;  // what getFieldsToSerialize points at
};

using PoolHeadPluginCreator = PluginCreator<PoolHeadPlugin>;
using PreprocessPluginCreator = PluginCreator<PreprocessPlugin>;

}  // namespace edgetl::trt
