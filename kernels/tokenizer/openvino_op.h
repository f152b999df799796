// OpenVINO op edgetl::BertTokenize (opset "edgetl"): strings (as StringTensorUnpack gives them) -> BERT token ids,
// padded to the longest text of the batch. One op in place of openvino-tokenizers' subgraph of ~17 reference ops.
#pragma once

#include <memory>
#include <mutex>
#include <openvino/op/op.hpp>

#include "tokenizer/bert_tokenizer.h"

namespace edgetl {

class BertTokenizeOp : public ov::op::Op {
public:
    OPENVINO_OP("BertTokenize", "edgetl");

    BertTokenizeOp() = default;
    // Inputs: begins, ends (int32 [N]) and symbols (uint8 [B]) of the texts; then the tables of
    // edgetl/tokenizer_graphs/bert_tables.py as constants: vocab_bytes u8, vocab_offsets i32 [V + 1], norm i32 [S, 2],
    // pool i32, classes i32 [C, 2], added i32. Outputs: input_ids, token_type_ids, attention_mask (int64 [N, T]).
    BertTokenizeOp(const ov::OutputVector& inputs, int64_t max_length, int64_t unk_id, int64_t cls_id, int64_t sep_id,
                   int64_t pad_id, int64_t max_chars_per_word, std::string prefix);

    void validate_and_infer_types() override;
    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& inputs) const override;
    bool visit_attributes(ov::AttributeVisitor& visitor) override;
    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override;
    bool has_evaluate() const override { return true; }

private:
    const BertTokenizer& tokenizer(const ov::TensorVector& inputs) const;  // built from the constants once

    int64_t m_max_length = 512, m_unk_id = 100, m_cls_id = 101, m_sep_id = 102, m_pad_id = 0;
    int64_t m_max_chars_per_word = 100;
    std::string m_prefix = "##";
    mutable std::once_flag m_built;
    mutable std::unique_ptr<BertTokenizer> m_tokenizer;
};

}  // namespace edgetl
