#include "tokenizer/openvino_op.h"

#include <openvino/core/parallel.hpp>

namespace edgetl {
namespace {

enum Input { kBegins, kEnds, kSymbols, kVocabBytes, kVocabOffsets, kNorm, kPool, kClasses, kAdded, kInputs };

template <typename T>
std::vector<T> copy_of(const ov::Tensor& t) {
    const T* p = t.data<const T>();
    return std::vector<T>(p, p + t.get_size());
}

}  // namespace

BertTokenizeOp::BertTokenizeOp(const ov::OutputVector& inputs, int64_t max_length, int64_t unk_id, int64_t cls_id,
                               int64_t sep_id, int64_t pad_id, int64_t max_chars_per_word, std::string prefix)
    : Op(inputs),
      m_max_length(max_length),
      m_unk_id(unk_id),
      m_cls_id(cls_id),
      m_sep_id(sep_id),
      m_pad_id(pad_id),
      m_max_chars_per_word(max_chars_per_word),
      m_prefix(std::move(prefix)) {
    constructor_validate_and_infer_types();
}

void BertTokenizeOp::validate_and_infer_types() {
    using ov::element::i32, ov::element::u8;
    NODE_VALIDATION_CHECK(this, get_input_size() == kInputs, "expected 9 inputs (begins, ends, symbols, 6 tables)");
    const ov::element::Type types[kInputs] = {i32, i32, u8, u8, i32, i32, i32, i32, i32};
    for (size_t i = 0; i < kInputs; ++i)
        NODE_VALIDATION_CHECK(this, get_input_element_type(i) == types[i], "input ", i, " has the wrong type");
    NODE_VALIDATION_CHECK(this, m_max_length >= 2, "max_length must leave room for [CLS] and [SEP]");
    const ov::PartialShape& begins = get_input_partial_shape(kBegins);
    const ov::Dimension n = begins.rank().is_static() ? begins[0] : ov::Dimension::dynamic();
    const ov::PartialShape ids{n, ov::Dimension(2, m_max_length)};  // [CLS] and [SEP] at least
    for (size_t i = 0; i < 3; ++i) set_output_type(i, ov::element::i64, ids);
}

std::shared_ptr<ov::Node> BertTokenizeOp::clone_with_new_inputs(const ov::OutputVector& inputs) const {
    check_new_args_count(this, inputs);
    return std::make_shared<BertTokenizeOp>(inputs, m_max_length, m_unk_id, m_cls_id, m_sep_id, m_pad_id,
                                            m_max_chars_per_word, m_prefix);
}

bool BertTokenizeOp::visit_attributes(ov::AttributeVisitor& visitor) {
    visitor.on_attribute("max_length", m_max_length);
    visitor.on_attribute("unk_id", m_unk_id);
    visitor.on_attribute("cls_id", m_cls_id);
    visitor.on_attribute("sep_id", m_sep_id);
    visitor.on_attribute("pad_id", m_pad_id);
    visitor.on_attribute("max_chars_per_word", m_max_chars_per_word);
    visitor.on_attribute("prefix", m_prefix);
    return true;
}

const BertTokenizer& BertTokenizeOp::tokenizer(const ov::TensorVector& inputs) const {
    // The tables are constants of the model: read once, on the first call, and kept (copied) with the op.
    std::call_once(m_built, [&] {
        BertTables t;
        t.vocab_bytes = copy_of<uint8_t>(inputs[kVocabBytes]);
        t.vocab_offsets = copy_of<int32_t>(inputs[kVocabOffsets]);
        t.norm = copy_of<int32_t>(inputs[kNorm]);
        t.pool = copy_of<int32_t>(inputs[kPool]);
        t.classes = copy_of<int32_t>(inputs[kClasses]);
        t.added = copy_of<int32_t>(inputs[kAdded]);
        t.unk_id = m_unk_id, t.cls_id = m_cls_id, t.sep_id = m_sep_id;
        t.max_chars_per_word = m_max_chars_per_word;
        t.prefix = m_prefix;
        m_tokenizer = std::make_unique<BertTokenizer>(std::move(t));
    });
    return *m_tokenizer;
}

bool BertTokenizeOp::evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const {
    const BertTokenizer& tok = tokenizer(inputs);
    const size_t n = inputs[kBegins].get_size();
    const int32_t* begins = inputs[kBegins].data<const int32_t>();
    const int32_t* ends = inputs[kEnds].data<const int32_t>();
    const auto* symbols = reinterpret_cast<const char*>(inputs[kSymbols].data<const uint8_t>());
    const size_t bytes = inputs[kSymbols].get_size();

    std::vector<std::vector<int32_t>> ids(n);
    const auto encode = [&](size_t i) {
        const size_t a = size_t(std::max(begins[i], 0)), b = std::min(size_t(std::max(ends[i], 0)), bytes);
        tok.encode(std::string_view(symbols + a, b > a ? b - a : 0), m_max_length, ids[i]);
    };
    if (n < 4) {  // a sentence takes microseconds: waking the thread pool costs more
        for (size_t i = 0; i < n; ++i) encode(i);
    } else {
        ov::parallel_for(n, encode);
    }
    size_t t = 0;
    for (const auto& row : ids) t = std::max(t, row.size());
    for (auto& out : outputs) out.set_shape({n, t});
    int64_t* input_ids = outputs[0].data<int64_t>();
    int64_t* type_ids = outputs[1].data<int64_t>();
    int64_t* mask = outputs[2].data<int64_t>();
    for (size_t i = 0; i < n; ++i) {
        for (size_t j = 0; j < t; ++j) {
            const bool real = j < ids[i].size();
            input_ids[i * t + j] = real ? ids[i][j] : m_pad_id;
            type_ids[i * t + j] = 0;
            mask[i * t + j] = real ? 1 : 0;
        }
    }
    return true;
}

}  // namespace edgetl
