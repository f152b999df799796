// UNVERIFIED against a real TensorRT (see kernels/tensorrt/plugin_common.h).
#include "tensorrt/plugins.h"

#include "cuda/edgetl_cuda.h"

namespace edgetl::trt {

using namespace nvinfer1;

std::vector<PluginField> PreprocessPlugin::fieldNames() {
    return {
        PluginField("size", nullptr, PluginFieldType::kINT32, 2),
        PluginField("scale", nullptr, PluginFieldType::kFLOAT32, 3),
        PluginField("bias", nullptr, PluginFieldType::kFLOAT32, 3),
        PluginField("channels", nullptr, PluginFieldType::kINT32, 3),
    };
}

PreprocessPlugin* PreprocessPlugin::create(PluginFieldCollection const* fc) {
    std::vector<int64_t> size, channels{0, 1, 2};
    std::vector<float> scale, bias;
    if (!read_ints(fc, "size", size) || !read_floats(fc, "scale", scale) || !read_floats(fc, "bias", bias)) {
        return nullptr;
    }
    read_ints(fc, "channels", channels);  // optional: RGB by default
    if (size.size() != 2 || scale.size() != 3 || bias.size() != 3 || channels.size() != 3) return nullptr;
    return new PreprocessPlugin(size, scale, bias, channels);
}

PreprocessPlugin::PreprocessPlugin(std::vector<int64_t> size, std::vector<float> scale, std::vector<float> bias,
                                   std::vector<int64_t> channels)
    : m_size(std::move(size)), m_channels(std::move(channels)), m_scale(std::move(scale)), m_bias(std::move(bias)) {}

int32_t PreprocessPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*,
                                             int32_t nbInputs) const noexcept {
    if (nbInputs != 1 || nbOutputs != 1) return -1;
    outputTypes[0] = DataType::kFLOAT;
    return 0;
}

int32_t PreprocessPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                          DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept {
    if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims != 4) return -1;
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = exprBuilder.constant(3);
    outputs[0].d[2] = exprBuilder.constant(m_size[0]);
    outputs[0].d[3] = exprBuilder.constant(m_size[1]);
    return 0;
}

bool PreprocessPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t,
                                                 int32_t) noexcept {
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    return pos == 0 ? d.type == DataType::kUINT8 : d.type == DataType::kFLOAT;
}

int32_t PreprocessPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                                  void const* const* inputs, void* const* outputs, void*, cudaStream_t stream) noexcept {
    Dims const& in = inputDesc[0].dims;  // [N, H, W, 3]
    int32_t channels[3] = {int32_t(m_channels[0]), int32_t(m_channels[1]), int32_t(m_channels[2])};
    return edgetl_preprocess_cuda(static_cast<uint8_t const*>(inputs[0]), static_cast<float*>(outputs[0]), in.d[0],
                                  in.d[1], in.d[2], m_size[0], m_size[1], m_scale.data(), m_bias.data(), channels,
                                  stream);
}

PluginFieldCollection const* PreprocessPlugin::getFieldsToSerialize() noexcept {
    m_size32.assign(m_size.begin(), m_size.end());
    m_channels32.assign(m_channels.begin(), m_channels.end());
    return serialize({
        PluginField("size", m_size32.data(), PluginFieldType::kINT32, 2),
        PluginField("scale", m_scale.data(), PluginFieldType::kFLOAT32, 3),
        PluginField("bias", m_bias.data(), PluginFieldType::kFLOAT32, 3),
        PluginField("channels", m_channels32.data(), PluginFieldType::kINT32, 3),
    });
}

}  // namespace edgetl::trt
