// Shared pieces of edgetl's TensorRT 10 plugins (IPluginV3). UNVERIFIED: written against the TensorRT 10 headers'
// documented API without a TensorRT install to compile or run it (none can be had on the development machines);
// the CUDA kernels it calls are the ones tested by kernels/cuda_harness.py.
//
// TensorRT's ONNX parser imports an unknown node through the plugin registry by op_type, version "1" and the
// empty namespace, passing the node's attributes as PluginFields (ints as INT32 or INT64, floats as FLOAT32).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace edgetl::trt {

constexpr char const* kVersion = "1";
constexpr char const* kNamespace = "";

// Reads an INT32/INT64 or FLOAT32 plugin field into `out`; false when absent or of another type.
inline bool read_ints(nvinfer1::PluginFieldCollection const* fc, char const* name, std::vector<int64_t>& out) {
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (std::strcmp(f.name, name) != 0) continue;
        out.clear();
        if (f.type == nvinfer1::PluginFieldType::kINT32) {
            auto const* v = static_cast<int32_t const*>(f.data);
            out.assign(v, v + f.length);
            return true;
        }
        if (f.type == nvinfer1::PluginFieldType::kINT64) {
            auto const* v = static_cast<int64_t const*>(f.data);
            out.assign(v, v + f.length);
            return true;
        }
        return false;
    }
    return false;
}

inline bool read_floats(nvinfer1::PluginFieldCollection const* fc, char const* name, std::vector<float>& out) {
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        nvinfer1::PluginField const& f = fc->fields[i];
        if (std::strcmp(f.name, name) != 0 || f.type != nvinfer1::PluginFieldType::kFLOAT32) continue;
        auto const* v = static_cast<float const*>(f.data);
        out.assign(v, v + f.length);
        return true;
    }
    return false;
}

// IPluginV3 hands out its capability interfaces by type; every edgetl plugin implements all three.
template <typename Plugin>
nvinfer1::IPluginCapability* capability(Plugin* self, nvinfer1::PluginCapabilityType type) noexcept {
    switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
        return static_cast<nvinfer1::IPluginV3OneCore*>(self);
    case nvinfer1::PluginCapabilityType::kBUILD:
        return static_cast<nvinfer1::IPluginV3OneBuild*>(self);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
        return static_cast<nvinfer1::IPluginV3OneRuntime*>(self);
    }
    return nullptr;
}

}  // namespace edgetl::trt
