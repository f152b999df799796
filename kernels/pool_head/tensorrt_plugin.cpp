// UNVERIFIED against a real TensorRT (see kernels/tensorrt/plugin_common.h).
#include "tensorrt/plugins.h"

#include "cuda/edgetl_cuda.h"

namespace edgetl::trt {

using namespace nvinfer1;

int32_t PoolHeadPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                        DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
    if (nbInputs != 3 || nbOutputs != 2) return -1;
    // The kernel keeps C + K floats in shared memory: refuse at build time what enqueue would refuse.
    int64_t const c = in[0].max.d[1], k = in[1].max.d[0];
    return c + k <= edgetl_pool_head_cuda_max_width() ? 0 : -1;
}

int32_t PoolHeadPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const*,
                                           int32_t nbInputs) const noexcept {
    if (nbInputs != 3 || nbOutputs != 2) return -1;
    outputTypes[0] = DataType::kFLOAT;
    outputTypes[1] = DataType::kINT64;
    return 0;
}

int32_t PoolHeadPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
                                        DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept {
    if (nbInputs != 3 || nbOutputs != 2 || inputs[0].nbDims != 4 || inputs[1].nbDims != 2) return -1;
    outputs[0].nbDims = 2;  // probs [N, K]
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[1].d[0];
    outputs[1].nbDims = 1;  // label [N]
    outputs[1].d[0] = inputs[0].d[0];
    return 0;
}

bool PoolHeadPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t,
                                               int32_t) noexcept {
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    return pos == 4 ? d.type == DataType::kINT64 : d.type == DataType::kFLOAT;  // x, weight, bias, probs: float
}

int32_t PoolHeadPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
                                void* const* outputs, void*, cudaStream_t stream) noexcept {
    Dims const& x = inputDesc[0].dims;  // [N, C, H, W]
    int64_t const k = inputDesc[1].dims.d[0];
    return edgetl_pool_head_cuda(static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]),
                                 static_cast<float const*>(inputs[2]), static_cast<float*>(outputs[0]),
                                 static_cast<int64_t*>(outputs[1]), x.d[0], x.d[1], int64_t(x.d[2]) * x.d[3], k,
                                 stream);
}

}  // namespace edgetl::trt
