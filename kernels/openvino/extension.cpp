// The OpenVINO registration table: every edgetl op, plus how the ONNX frontend maps the custom-domain nodes
// that edgetl/ops/onnx_functions.py writes (domain "ai.edgetl") onto them. With this library added to an
// ov::Core, those nodes become the fused kernels; without it, OpenVINO inlines their ONNX function bodies.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/frontend/onnx/extension/conversion.hpp>

#include "pool_head/openvino_op.h"
#include "preprocess/openvino_op.h"
#include "tokenizer/openvino_op.h"

namespace {

constexpr const char* kOnnxDomain = "ai.edgetl";

// ONNX FLOATS attributes arrive as vector<double> from the current frontend and as vector<float> from older ones.
std::vector<float> floats(const ov::frontend::NodeContext& node, const std::string& name) {
    const ov::Any value = node.get_attribute_as_any(name);
    if (value.is<std::vector<double>>()) {
        const auto& d = value.as<std::vector<double>>();
        return std::vector<float>(d.begin(), d.end());
    }
    return value.as<std::vector<float>>();
}

ov::OutputVector convert_preprocess(const ov::frontend::NodeContext& node) {
    auto op = std::make_shared<edgetl::PreprocessOp>(
        node.get_input(0), node.get_attribute<std::vector<int64_t>>("size"), floats(node, "scale"),
        floats(node, "bias"),
        node.get_attribute<std::vector<int64_t>>("channels", std::vector<int64_t>{0, 1, 2}));
    return op->outputs();
}

ov::OutputVector convert_pool_head(const ov::frontend::NodeContext& node) {
    auto op = std::make_shared<edgetl::PoolHeadOp>(node.get_input(0), node.get_input(1), node.get_input(2));
    return op->outputs();
}

}  // namespace

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({
    // OpExtension: lets OpenVINO IR (.xml) that contains the ops be read back and compiled.
    std::make_shared<ov::OpExtension<edgetl::PreprocessOp>>(),
    std::make_shared<ov::OpExtension<edgetl::PoolHeadOp>>(),
    // built in Python by edgetl.deploy.targets.ov_tokenizer (NodeFactory); no ONNX form: strings stay in OpenVINO
    std::make_shared<ov::OpExtension<edgetl::BertTokenizeOp>>(),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("Preprocess", kOnnxDomain, convert_preprocess),
    std::make_shared<ov::frontend::onnx::ConversionExtension>("PoolHead", kOnnxDomain, convert_pool_head),
}));
