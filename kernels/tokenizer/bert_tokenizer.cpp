#include "tokenizer/bert_tokenizer.h"

#include <algorithm>
#include <stdexcept>

namespace edgetl {
namespace {

constexpr uint32_t kReplacement = 0xFFFD;

// The next code point of UTF-8 `s` at `i` (advanced past it); a malformed sequence reads as one U+FFFD byte,
// which BERT's clean_text deletes.
uint32_t next_code_point(std::string_view s, size_t& i) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 < 0x80) return ++i, b0;
    const int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
    if (len == 0 || i + len > s.size()) return ++i, kReplacement;
    uint32_t cp = b0 & (0xFF >> (len + 1));
    for (int k = 1; k < len; ++k) {
        const auto b = static_cast<uint8_t>(s[i + k]);
        if ((b & 0xC0) != 0x80) return ++i, kReplacement;
        cp = (cp << 6) | (b & 0x3F);
    }
    i += len;
    return cp;
}

void append_utf8(uint32_t cp, std::string& out) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

// The value of the run [first code point, value] pairs that covers cp (runs sorted by first code point).
int32_t run_value(const std::vector<int32_t>& runs, uint32_t cp) {
    const size_t n = runs.size() / 2;
    size_t lo = 0, hi = n;  // first run whose start is > cp
    while (lo < hi) {
        const size_t mid = (lo + hi) / 2;
        if (static_cast<uint32_t>(runs[2 * mid]) <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? -1 : runs[2 * (lo - 1) + 1];
}

}  // namespace

BertTokenizer::BertTokenizer(BertTables tables) : t_(std::move(tables)) {
    const size_t v = t_.vocab_offsets.empty() ? 0 : t_.vocab_offsets.size() - 1;
    if (t_.norm.size() % 2 || t_.classes.size() % 2 || t_.norm.empty() || t_.classes.empty())
        throw std::invalid_argument("BertTokenize: norm and classes must be non-empty [rows, 2] tables");
    const auto* bytes = reinterpret_cast<const char*>(t_.vocab_bytes.data());
    for (size_t id = 0; id < v; ++id) {
        const int32_t a = t_.vocab_offsets[id], b = t_.vocab_offsets[id + 1];
        if (a < 0 || b < a || size_t(b) > t_.vocab_bytes.size())
            throw std::invalid_argument("BertTokenize: vocab_offsets out of range");
        std::string_view piece(bytes + a, size_t(b - a));
        if (piece.size() > t_.prefix.size() && piece.substr(0, t_.prefix.size()) == t_.prefix)
            next_.emplace(piece.substr(t_.prefix.size()), int32_t(id));  // first id wins, as in a vocab map
        else
            first_.emplace(piece, int32_t(id));
        longest_ = std::max(longest_, piece.size());
    }
    for (int32_t id : t_.added) {
        if (id < 0 || size_t(id) >= v) throw std::invalid_argument("BertTokenize: added token id out of range");
        if (t_.vocab_offsets[id + 1] > t_.vocab_offsets[id]) added_first_[t_.vocab_bytes[t_.vocab_offsets[id]]] = true;
    }
    for (int64_t s : {t_.unk_id, t_.cls_id, t_.sep_id})
        if (s < 0 || size_t(s) >= v) throw std::invalid_argument("BertTokenize: special token id out of range");
    for (uint32_t c = 0; c < 128; ++c) {
        ascii_norm_[c] = run_value(t_.norm, c);
        ascii_class_[c] = run_value(t_.classes, c);
    }
}

int32_t BertTokenizer::norm_action(uint32_t cp) const {
    return cp < 128 ? ascii_norm_[cp] : run_value(t_.norm, cp);
}

int32_t BertTokenizer::char_class(uint32_t cp) const {
    return cp < 128 ? ascii_class_[cp] : run_value(t_.classes, cp);
}

size_t BertTokenizer::match_added(std::string_view rest, int32_t& id) const {
    size_t best = 0;
    for (int32_t a : t_.added) {  // a handful ([PAD] [UNK] [CLS] [SEP] [MASK]): the longest match wins
        const std::string_view token(reinterpret_cast<const char*>(t_.vocab_bytes.data()) + t_.vocab_offsets[a],
                                     size_t(t_.vocab_offsets[a + 1] - t_.vocab_offsets[a]));
        if (token.size() > best && rest.substr(0, token.size()) == token) best = token.size(), id = a;
    }
    return best;
}

void BertTokenizer::word_pieces(const std::string& word, int64_t chars, std::vector<int32_t>& ids) const {
    if (chars > t_.max_chars_per_word) {
        ids.push_back(int32_t(t_.unk_id));
        return;
    }
    const size_t begin = ids.size();
    size_t start = 0;
    while (start < word.size()) {
        // Longest vocabulary piece first, shrinking by whole UTF-8 characters.
        size_t end = std::min(word.size(), start + longest_);
        while (end < word.size() && (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80) --end;
        int32_t found = -1;
        for (; end > start; --end) {
            if (end < word.size() && (static_cast<uint8_t>(word[end]) & 0xC0) == 0x80) continue;
            const auto& map = start == 0 ? first_ : next_;
            const auto it = map.find(std::string_view(word).substr(start, end - start));
            if (it != map.end()) {
                found = it->second;
                break;
            }
        }
        if (found < 0) {  // one piece missing: the whole word is [UNK]
            ids.resize(begin);
            ids.push_back(int32_t(t_.unk_id));
            return;
        }
        ids.push_back(found);
        start = end;
    }
}

void BertTokenizer::feed(uint32_t cp, std::string& word, int64_t& chars, std::vector<int32_t>& ids) const {
    const int32_t cls = char_class(cp);
    if (cls == kWord) {
        append_utf8(cp, word);
        ++chars;
        return;
    }
    if (!word.empty()) word_pieces(word, chars, ids);
    word.clear();
    chars = 0;
    if (cls == kPunct) {
        std::string single;
        append_utf8(cp, single);
        word_pieces(single, 1, ids);
    }
}

void BertTokenizer::encode(std::string_view text, int64_t max_length, std::vector<int32_t>& ids) const {
    ids.clear();
    ids.push_back(int32_t(t_.cls_id));
    const size_t limit = size_t(std::max<int64_t>(max_length - 1, 1));  // room left for [SEP]
    std::string word;
    int64_t chars = 0;
    size_t i = 0;
    while (i < text.size() && ids.size() < limit + 1) {  // +1: a word may overshoot; truncated below
        int32_t added = -1;
        if (added_first_[static_cast<uint8_t>(text[i])]) {
            if (const size_t n = match_added(text.substr(i), added)) {
                if (!word.empty()) word_pieces(word, chars, ids);
                word.clear(), chars = 0;
                ids.push_back(added);
                i += n;
                continue;
            }
        }
        const uint32_t cp = next_code_point(text, i);
        const int32_t action = norm_action(cp);
        if (action == kKeep) {
            feed(cp, word, chars, ids);
        } else if (action == kSpaced) {
            feed(' ', word, chars, ids);
            feed(cp, word, chars, ids);
            feed(' ', word, chars, ids);
        } else if (action >= 0) {
            const int32_t count = t_.pool[size_t(action)];
            for (int32_t k = 1; k <= count; ++k) feed(uint32_t(t_.pool[size_t(action) + k]), word, chars, ids);
        }  // kDelete: nothing
    }
    if (!word.empty() && ids.size() < limit) word_pieces(word, chars, ids);
    if (ids.size() > limit) ids.resize(limit);
    ids.push_back(int32_t(t_.sep_id));
}

}  // namespace edgetl
