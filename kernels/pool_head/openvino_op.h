// OpenVINO op edgetl::PoolHead (opset "edgetl"): global average pool + dense + softmax + argmax in one kernel.
#pragma once

#include <openvino/op/op.hpp>

namespace edgetl {

class PoolHeadOp : public ov::op::Op {
public:
    OPENVINO_OP("PoolHead", "edgetl");

    PoolHeadOp() = default;
    // x: float32 [N, C, H, W]; weight: float32 [K, C]; bias: float32 [K]. Outputs: probs f32 [N, K], label i64 [N].
    PoolHeadOp(const ov::Output<ov::Node>& x, const ov::Output<ov::Node>& weight, const ov::Output<ov::Node>& bias);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
    bool visit_attributes(ov::AttributeVisitor&) override { return true; }
    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
    bool has_evaluate() const override { return true; }
};

}  // namespace edgetl
