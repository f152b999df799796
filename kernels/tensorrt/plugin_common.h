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
#include <utility>
#include <vector>

// The four methods every plugin defines for itself (output types and shapes, formats, enqueue), declared once:
// write EDGETL_TRT_PLUGIN_METHODS in the plugin's class body, then define them in its .cpp.
#define EDGETL_TRT_PLUGIN_METHODS                                                                                    \
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes, \
                               int32_t nbInputs) const noexcept override;                                           \
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs, \
                            int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,                  \
                            nvinfer1::IExprBuilder& exprBuilder) noexcept override;                                 \
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,   \
                                   int32_t nbOutputs) noexcept override;                                            \
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,       \
                    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

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

// Owns a PluginFieldCollection handed to TensorRT (which keeps only the pointer). A copy starts empty, so a clone
// never points into the fields of the object it was copied from.
class FieldCollection {
public:
    FieldCollection() = default;
    FieldCollection(FieldCollection const&) noexcept {}
    FieldCollection& operator=(FieldCollection const&) noexcept { return *this; }

    nvinfer1::PluginFieldCollection const* set(std::vector<nvinfer1::PluginField> fields) noexcept {
        m_fields = std::move(fields);
        m_collection.nbFields = int32_t(m_fields.size());
        m_collection.fields = m_fields.data();
        return &m_collection;
    }
    nvinfer1::PluginFieldCollection const* get() const noexcept { return &m_collection; }

private:
    std::vector<nvinfer1::PluginField> m_fields;
    nvinfer1::PluginFieldCollection m_collection{};
};

// The IPluginV3 boilerplate every edgetl plugin shares (CRTP). `Plugin` derives from PluginBase<Plugin>, is
// copyable, and provides:
//   static constexpr char const* kName;      plugin name, also the ONNX op_type TensorRT's parser looks up
//   static constexpr int32_t kNbOutputs;
//   static std::vector<nvinfer1::PluginField> fieldNames();                what the creator advertises
//   static Plugin* create(nvinfer1::PluginFieldCollection const* fc);      nullptr when fc is unusable (may throw)
//   getOutputDataTypes, getOutputShapes, supportsFormatCombination, enqueue, getFieldsToSerialize
//   (the last one typically `return serialize({...})`), and configurePlugin when it has build-time checks.
// Version kVersion, namespace kNamespace, no workspace, nothing to do on a shape change, one capability per
// interface, clone() by copy, attachToContext() = clone().
template <typename Plugin>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
public:
    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override {
        switch (type) {
        case nvinfer1::PluginCapabilityType::kCORE:
            return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD:
            return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME:
            return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* clone() noexcept override {
        try {
            return new Plugin(static_cast<Plugin const&>(*this));
        } catch (...) {
            return nullptr;
        }
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return Plugin::kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return Plugin::kNbOutputs; }
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
                            int32_t) noexcept override {
        return 0;
    }
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const*, int32_t, nvinfer1::DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const*, int32_t, nvinfer1::PluginTensorDesc const*,
                          int32_t) noexcept override {
        return 0;
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext*) noexcept override { return clone(); }

protected:
    // For getFieldsToSerialize(): keeps `fields` alive in this object and returns the collection pointing at them.
    nvinfer1::PluginFieldCollection const* serialize(std::vector<nvinfer1::PluginField> fields) noexcept {
        return m_serialized.set(std::move(fields));
    }

private:
    FieldCollection m_serialized;
};

// The matching IPluginCreatorV3One: name/version/namespace and field names from `Plugin`, createPlugin() =
// Plugin::create(fc) with exceptions turned into nullptr.
template <typename Plugin>
class PluginCreator : public nvinfer1::IPluginCreatorV3One {
public:
    PluginCreator() { m_fieldNames.set(Plugin::fieldNames()); }

    char const* getPluginName() const noexcept override { return Plugin::kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return m_fieldNames.get(); }
    nvinfer1::IPluginV3* createPlugin(char const*, nvinfer1::PluginFieldCollection const* fc,
                                      nvinfer1::TensorRTPhase) noexcept override {
        try {
            return Plugin::create(fc);
        } catch (...) {
            return nullptr;
        }
    }

private:
    FieldCollection m_fieldNames;
};

}  // namespace edgetl::trt
