// OpenVINO op edgetl::Preprocess (opset "edgetl"): the fused CPU kernel behind OpenVINO's custom-op interface.
#pragma once

#include <openvino/op/op.hpp>

namespace edgetl {

class PreprocessOp : public ov::op::Op {
public:
    OPENVINO_OP("Preprocess", "edgetl");

    PreprocessOp() = default;
    // frames: uint8 [N, H, W, 3]; size: {h, w}; scale / bias: 3 floats per output channel; channels: the input
    // channel each output channel reads ({0, 1, 2} keeps RGB, {2, 1, 0} swaps to BGR).
    PreprocessOp(const ov::Output<ov::Node>& frames, std::vector<int64_t> size, std::vector<float> scale,
                 std::vector<float> bias, std::vector<int64_t> channels);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
    bool has_evaluate() const override { return true; }

private:
    std::vector<int64_t> m_size;
    std::vector<float> m_scale, m_bias;
    std::vector<int64_t> m_channels{0, 1, 2};
};

}  // namespace edgetl
