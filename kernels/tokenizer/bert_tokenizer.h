// BERT WordPiece tokenization (uncased or cased BertNormalizer, BertPreTokenizer, [CLS] text [SEP]) driven by
// tables measured from the Hugging Face tokenizer itself (edgetl/tokenizer_graphs/bert_tables.py): this file carries no
// Unicode data of its own, so it gives transformers' ids for whatever Unicode version `tokenizers` was built with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace edgetl {

// The tables as edgetl/tokenizer_graphs/bert_tables.py lays them out (all copied: the tokenizer outlives the tensors).
struct BertTables {
    std::vector<uint8_t> vocab_bytes;
    std::vector<int32_t> vocab_offsets;  // [V + 1]
    std::vector<int32_t> norm;           // [S, 2]: first code point, action (-1 keep, -2 delete, -3 spaced, k pool)
    std::vector<int32_t> pool;           // replacement code points: pool[k] = count, then the code points
    std::vector<int32_t> classes;        // [C, 2]: first code point, class (0 word, 1 punctuation, 2 whitespace)
    std::vector<int32_t> added;          // ids of the tokens matched verbatim in the raw text
    int64_t unk_id = 100, cls_id = 101, sep_id = 102;
    int64_t max_chars_per_word = 100;
    std::string prefix = "##";
};

class BertTokenizer {
public:
    explicit BertTokenizer(BertTables tables);

    // One UTF-8 text -> [CLS] pieces [SEP], at most max_length ids (pieces truncated on the right, as BERT does).
    void encode(std::string_view text, int64_t max_length, std::vector<int32_t>& ids) const;

private:
    enum : int32_t { kKeep = -1, kDelete = -2, kSpaced = -3 };
    enum : int32_t { kWord = 0, kPunct = 1, kSpace = 2 };

    int32_t norm_action(uint32_t cp) const;
    int32_t char_class(uint32_t cp) const;
    // Appends one normalized code point to the word being built, or ends the word (whitespace, punctuation).
    void feed(uint32_t cp, std::string& word, int64_t& chars, std::vector<int32_t>& ids) const;
    void word_pieces(const std::string& word, int64_t chars, std::vector<int32_t>& ids) const;
    size_t match_added(std::string_view rest, int32_t& id) const;  // bytes of the added token at rest's start

    BertTables t_;
    std::unordered_map<std::string_view, int32_t> first_, next_;  // word-initial pieces; "##" pieces sans prefix
    size_t longest_ = 0;                                          // bytes of the longest piece
    int32_t ascii_norm_[128], ascii_class_[128];
    bool added_first_[256] = {};  // first bytes of the added tokens
};

}  // namespace edgetl
