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

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                            nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;

    // IPluginV3OneRuntime
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override { return serialize({}); }
};

using PoolHeadPluginCreator = PluginCreator<PoolHeadPlugin>;

}  // namespace edgetl::trt
