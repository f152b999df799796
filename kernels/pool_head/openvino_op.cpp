#include "pool_head/openvino_op.h"

#include <openvino/core/parallel.hpp>

#include "pool_head/pool_head_cpu.h"

namespace edgetl {

PoolHeadOp::PoolHeadOp(const ov::Output<ov::Node>& x, const ov::Output<ov::Node>& weight,
                       const ov::Output<ov::Node>& bias)
    : Op({x, weight, bias}) {
    constructor_validate_and_infer_types();
}

void PoolHeadOp::validate_and_infer_types() {
    for (size_t i = 0; i < 3; ++i)
        NODE_VALIDATION_CHECK(this, get_input_element_type(i) == ov::element::f32, "inputs must be float32");
    const ov::PartialShape &x = get_input_partial_shape(0), &w = get_input_partial_shape(1),
                           &b = get_input_partial_shape(2);
    NODE_VALIDATION_CHECK(this, x.rank().compatible(4) && w.rank().compatible(2) && b.rank().compatible(1),
                          "expected x [N, C, H, W], weight [K, C], bias [K]");
    ov::Dimension n = ov::Dimension::dynamic(), k = ov::Dimension::dynamic();
    if (w.rank().is_static()) {
        k = w[0];
        if (x.rank().is_static())
            NODE_VALIDATION_CHECK(this, x[1].compatible(w[1]), "weight [K, C] does not match x channels");
    }
    if (b.rank().is_static()) NODE_VALIDATION_CHECK(this, k.merge(k, k, b[0]), "bias [K] does not match weight");
    if (x.rank().is_static()) n = x[0];
    set_output_type(0, ov::element::f32, ov::PartialShape{n, k});
    set_output_type(1, ov::element::i64, ov::PartialShape{n});
}

std::shared_ptr<ov::Node> PoolHeadOp::clone_with_new_inputs(const ov::OutputVector& inputs) const {
    check_new_args_count(this, inputs);
    return std::make_shared<PoolHeadOp>(inputs[0], inputs[1], inputs[2]);
}

bool PoolHeadOp::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
    const ov::Shape& xs = inputs[0].get_shape();
    const PoolHeadShape s{int64_t(xs[0]), int64_t(xs[1]), int64_t(xs[2] * xs[3]), int64_t(inputs[1].get_shape()[0])};
    outputs[0].set_shape({xs[0], size_t(s.k)});
    outputs[1].set_shape({xs[0]});
    const float* x = inputs[0].data<const float>();
    const float* weight = inputs[1].data<const float>();
    const float* bias = inputs[2].data<const float>();
    float* probs = outputs[0].data<float>();
    int64_t* label = outputs[1].data<int64_t>();

    // Pooling dominates (N * C * HW reads): split it over all threads even at batch 1, then one sample per task.
    std::vector<float> pooled(size_t(s.n * s.c)), logits(size_t(s.n * s.k));
    const int64_t rows = s.n * s.c;
    ov::parallel_nt(0, [&](int ithr, int nthr) {
        int64_t begin = 0, end = 0;
        ov::splitter(rows, nthr, ithr, begin, end);
        pool_rows(x + begin * s.hw, s.hw, end - begin, pooled.data() + begin);
    });
    ov::parallel_for(s.n, [&](int64_t i) {
        dense_softmax_argmax(pooled.data() + i * s.c, weight, bias, s.c, s.k, logits.data() + i * s.k,
                             probs + i * s.k, label + i);
    });
    return true;
}

}  // namespace edgetl
