// TensorRT plugin "Preprocess" (version 1): the fused CUDA kernel of kernels/preprocess/preprocess.cu.
// UNVERIFIED against a real TensorRT (see kernels/tensorrt/plugin_common.h). Open question for the first run on a
// Jetson: TensorRT documents kUINT8 as unsupported for plugin *outputs*; if it also refuses the uint8 frames input,
// this plugin needs a float input variant behind an ONNX Cast.
#pragma once

#include "tensorrt/plugin_common.h"

namespace edgetl::trt {

class PreprocessPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
public:
    PreprocessPlugin(std::vector<int64_t> size, std::vector<float> scale, std::vector<float> bias,
                     std::vector<int64_t> channels);

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        return capability(this, type);
    }
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return "Preprocess"; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
                            int32_t) noexcept override {
        return 0;
    }
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
                          int32_t) noexcept override {
        return 0;
    }
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    std::vector<int64_t> m_size, m_channels;
    std::vector<float> m_scale, m_bias;
    std::vector<int32_t> m_size32, m_channels32;  // what getFieldsToSerialize points at
    std::vector<nvinfer1::PluginField> m_fields;
    nvinfer1::PluginFieldCollection m_collection{};
};

class PreprocessPluginCreator : public nvinfer1::IPluginCreatorV3One {
public:
    PreprocessPluginCreator();
    char const* getPluginName() const noexcept override { return "Preprocess"; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &m_collection; }
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> m_fields;
    nvinfer1::PluginFieldCollection m_collection{};
};

}  // namespace edgetl::trt
