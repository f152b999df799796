#include "preprocess/openvino_op.h"

#include <openvino/core/parallel.hpp>

#include "preprocess/preprocess_cpu.h"

namespace edgetl {

PreprocessOp::PreprocessOp(const ov::Output<ov::Node>& frames, std::vector<int64_t> size, std::vector<float> scale,
                           std::vector<float> bias, std::vector<int64_t> channels)
    : Op({frames}),
      m_size(std::move(size)),
      m_scale(std::move(scale)),
      m_bias(std::move(bias)),
      m_channels(std::move(channels)) {
    constructor_validate_and_infer_types();
}

void PreprocessOp::validate_and_infer_types() {
    NODE_VALIDATION_CHECK(this, m_size.size() == 2 && m_size[0] > 0 && m_size[1] > 0, "size must be {h, w} > 0");
    NODE_VALIDATION_CHECK(this, m_scale.size() == 3 && m_bias.size() == 3, "scale and bias need 3 values each");
    NODE_VALIDATION_CHECK(this, m_channels.size() == 3, "channels needs 3 values");
    for (int64_t c : m_channels) NODE_VALIDATION_CHECK(this, c >= 0 && c < 3, "channels values must be 0, 1 or 2");
    NODE_VALIDATION_CHECK(this, get_input_element_type(0) == ov::element::u8, "frames must be uint8");
    const ov::PartialShape& in = get_input_partial_shape(0);
    NODE_VALIDATION_CHECK(this, in.rank().compatible(4), "frames must be [N, H, W, 3]");
    ov::Dimension batch = ov::Dimension::dynamic();
    if (in.rank().is_static()) {
        NODE_VALIDATION_CHECK(this, in[3].compatible(3), "frames must have 3 channels (NHWC)");
        batch = in[0];
    }
    set_output_type(0, ov::element::f32, ov::PartialShape{batch, 3, m_size[0], m_size[1]});
}

std::shared_ptr<ov::Node> PreprocessOp::clone_with_new_inputs(const ov::OutputVector& inputs) const {
    check_new_args_count(this, inputs);
    return std::make_shared<PreprocessOp>(inputs[0], m_size, m_scale, m_bias, m_channels);
}

bool PreprocessOp::visit_attributes(ov::AttributeVisitor& visitor) {
    visitor.on_attribute("size", m_size);
    visitor.on_attribute("scale", m_scale);
    visitor.on_attribute("bias", m_bias);
    visitor.on_attribute("channels", m_channels);
    return true;
}

bool PreprocessOp::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
    const ov::Shape& in = inputs[0].get_shape();
    const PreprocessShape s{int64_t(in[0]), int64_t(in[1]), int64_t(in[2]), m_size[0], m_size[1]};
    outputs[0].set_shape({in[0], 3, size_t(s.h_out), size_t(s.w_out)});
    PreprocessParams p{};
    for (int c = 0; c < 3; ++c) {
        p.scale[c] = m_scale[c];
        p.bias[c] = m_bias[c];
        p.channels[c] = int32_t(m_channels[c]);
    }
    const PreprocessTables tables(s);
    const uint8_t* frames = inputs[0].data<const uint8_t>();
    float* out = outputs[0].data<float>();
    // Rows are independent; ov::parallel_nt hands each thread one contiguous block of them.
    const int64_t rows = s.n * s.h_out;
    ov::parallel_nt(0, [&](int ithr, int nthr) {
        int64_t begin = 0, end = 0;
        ov::splitter(rows, nthr, ithr, begin, end);
        preprocess_rows(frames, out, s, p, tables, begin, end);
    });
    return true;
}

}  // namespace edgetl
