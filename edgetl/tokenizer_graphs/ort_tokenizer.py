"""The run's tokenizer on ONNX Runtime-extensions ops (domain `ai.onnx.contrib`), so an ONNX Runtime bundle takes
strings (training side; the bundle needs `onnxruntime-extensions` to run it).

`ort_tokenizer`: one string [1] in, int64 `input_ids`, `attention_mask`, `token_type_ids` [1, T] out, equal id for
id to `edgetl.tokenizer_graphs.tokenizers.hf_encode` (tests/text/test_tokenizers.py). The extensions' `BertTokenizer` op
alone is not BERT's tokenizer: it lowercases and strips accents only in Latin-1 (ひらがな, Ελληνικά, Русский,
한국어, Latin Extended differ), and a word with an unknown character gives its known pieces + [UNK] where BERT
gives one [UNK]. So the graph first runs BERT's normalizer as a per-character table measured on the Hugging Face
normalizer itself (`_bert_tables`), turns every word holding a character outside the vocabulary into one unknown
character, and only then calls the op, its own normalizing off.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetl.tokenizer_graphs.tokenizers import (
    TEXT_INPUT,
    TOKEN_OUTPUTS,
    chunks,
    hf_tokenizer,
    re_class,
    spans,
    tokenizer_sha256,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    from transformers import PreTrainedTokenizerFast

ORT_OPSET = 18  # edgetl.export.model.OPSET: the tokenizer graph merges in front of the export graph
CONTRIB = "ai.onnx.contrib"  # onnxruntime-extensions' custom op domain
_DELETED = 0xE000  # private use: the normalizer deletes it, so the table marks deletions with it
_UNKNOWN_WORD = "\u16a0"  # RUNIC LETTER FEHU: a letter outside BERT's vocabulary, so the op makes it one [UNK]
_SPECIAL = re.compile(r"^\[[^\[\]]+\]$")  # [CLS], [unused7]: vocabulary entries that are not text pieces


def ort_tokenizer(model_dir: Path, max_length: int) -> onnx.ModelProto:
    """The tokenizer as an `onnx.ModelProto` on ONNX Runtime extensions ops: one string [1] (input `text`) ->
    int64 input_ids, attention_mask, token_type_ids [1, T], equal to `hf_encode([text], max_length)`.

    One sentence per call (the input is declared [1]: the op reads two strings as a sentence pair; `ort_encode`
    loops a batch). Run it with `ort_session_options()`. BERT WordPiece tokenizers only (BertNormalizer,
    BertPreTokenizer, WordPiece). Known differences: the extensions' string ops end a text at a NUL character
    (transformers deletes the NUL, keeps the rest), and special tokens typed in the text ("[MASK]") are
    punctuation and a word here (transformers gives their ids)."""
    import onnx
    from onnx import TensorProto, helper

    tok = hf_tokenizer(model_dir)
    normalizer = _check_bert(tok, model_dir, max_length)
    table = _bert_tables(str(Path(model_dir).resolve()), tokenizer_sha256(model_dir))
    nodes = [*_constants(), *_normalize(table), *_unknown_words(table), *_wordpiece(tok, normalizer, max_length)]
    graph = helper.make_graph(
        nodes,
        "bert_tokenizer",
        [helper.make_tensor_value_info(TEXT_INPUT, TensorProto.STRING, [1])],
        [helper.make_tensor_value_info(name, TensorProto.INT64, [1, "T"]) for name in TOKEN_OUTPUTS],
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ORT_OPSET), helper.make_opsetid(CONTRIB, 1)],
        producer_name="edgetl",
    )
    helper.set_model_props(proto, {"tokenizer_sha256": tokenizer_sha256(model_dir), "max_length": str(max_length)})
    onnx.checker.check_model(proto)
    return proto


def _check_bert(tok: PreTrainedTokenizerFast, model_dir: Path, max_length: int) -> dict:
    """The tokenizer is one the graph reproduces (BERT WordPiece); returns its normalizer's settings."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    model, normalizer = spec["model"], spec.get("normalizer") or {}
    if (
        model.get("type") != "WordPiece"
        or normalizer.get("type") != "BertNormalizer"
        or (spec.get("pre_tokenizer") or {}).get("type") != "BertPreTokenizer"
    ):
        raise ValueError(f"{model_dir}: ort_tokenizer converts BERT WordPiece tokenizers only")
    if model.get("continuing_subword_prefix") != "##" or model.get("max_input_chars_per_word") != 100:
        raise ValueError(f"{model_dir}: the BertTokenizer op splits words with '##' and 100 characters at most")
    if max_length < 3:
        raise ValueError(f"max_length {max_length}: [CLS] and [SEP] leave no room for a token")
    ids = dict(tok.vocab)
    if sorted(ids.values()) != list(range(len(ids))):
        raise ValueError(f"{model_dir}: the vocabulary's ids are not 0..{len(ids) - 1}")
    return normalizer


# --- graph pieces ----------------------------------------------------------------------------------------------


def _string(name: str, value: str):
    from onnx import TensorProto, helper

    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.STRING, [1], [value.encode()])
    )


def _ints(name: str, values: list[int]):
    from onnx import TensorProto, helper

    return helper.make_node(
        "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
    )


def _op(kind: str, inputs: list[str], outputs: list[str] | str, contrib: bool = False, **attrs):
    from onnx import helper

    outputs = [outputs] if isinstance(outputs, str) else outputs
    return helper.make_node(kind, inputs, outputs, domain=CONTRIB if contrib else "", **attrs)


def _regex(source: str, pattern: str, rewrite: str, out: str) -> list:
    return [
        _string(f"{out}_pattern", pattern),
        _string(f"{out}_rewrite", rewrite),
        _op("StringRegexReplace", [source, f"{out}_pattern", f"{out}_rewrite"], out, True, global_replace=1),
    ]


def _chars(source: str, out: str) -> list:
    """A string [1] -> its characters [L]."""
    outputs = [out, f"{out}_begins", f"{out}_ends", f"{out}_rows"]
    return [_op("StringRegexSplitWithOffsets", [source, "one_char", "any_char"], outputs, True)]


def _constants() -> list:
    from onnx import TensorProto, helper

    return [
        _string("empty", ""),
        _string("space", " "),
        _string("unknown_char", _UNKNOWN_WORD),
        _string("one_char", "((?s).)"),
        _string("any_char", "(?s)."),  # RE2 FindAndConsume splits at the group
        _ints("axis0", [0]),
        _ints("zero", [0]),
        _ints("one", [1]),
        helper.make_node("Constant", [], ["true"], value=helper.make_tensor("true", TensorProto.BOOL, [1], [True])),
    ]


def _normalize(table: dict[str, str]) -> list:
    """1. BertNormalizer, character by character, from a table of what it does to every code point: tabs and
    newlines -> space (they cannot be table keys), then the table (lowercase, NFD without nonspacing marks,
    whitespace -> space, punctuation padded with spaces, deletions -> U+E000), then delete U+E000 and the private
    use planes, then spaces around CJK ideographs. `text` -> `cjk_spaced`."""
    return [
        *_regex(TEXT_INPUT, "[\\t\\n]", " ", "spaced"),
        *_chars("spaced", "raw_chars"),
        _op("StringMapping", ["raw_chars"], "mapped_chars", True, map=table["normalize"]),
        _op("StringJoin", ["mapped_chars", "empty", "axis0"], "mapped", True),
        *_regex("mapped", table["delete"], "", "kept"),
        *_regex("kept", table["cjk"], " \\1 ", "cjk_spaced"),
    ]


def _unknown_words(table: dict[str, str]) -> list:
    """2. WordPiece gives one [UNK] for a word it cannot cover, the op the pieces before + [UNK]: a word (run of
    non-spaces) holding a character outside the vocabulary becomes one unknown character. -> `words`."""
    from onnx import TensorProto, helper

    return [
        _op("StringConcat", ["space", "cjk_spaced"], "normalized", True),  # >= 1 character: StringEqual needs it
        *_chars("normalized", "norm_chars"),
        _op("StringMapping", ["norm_chars"], "classes", True, map=table["classes"]),  # known -> "k", " " -> "s"
        _string("class_space", "s"),
        _string("class_known", "k"),
        _op("StringEqual", ["classes", "class_space"], "is_space", True),
        _op("StringEqual", ["classes", "class_known"], "is_known", True),
        _op("Or", ["is_space", "is_known"], "not_unknown"),
        _op("Not", ["not_unknown"], "is_unknown"),
        _op("Cast", ["is_unknown"], "unknown_i", to=TensorProto.INT64),
        _op("Cast", ["is_space"], "space_i", to=TensorProto.INT64),
        _op("CumSum", ["space_i", "zero"], "word"),  # a word's characters share the count of spaces before them
        _op("Shape", ["norm_chars"], "n_chars"),
        _op("Add", ["n_chars", "one"], "n_words"),
        _op("ConstantOfShape", ["n_words"], "no_words", value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
        _op("ScatterElements", ["no_words", "word", "unknown_i"], "word_unknown_i", axis=0, reduction="max"),
        _op("Gather", ["word_unknown_i", "word"], "char_word_unknown_i", axis=0),
        _op("Cast", ["char_word_unknown_i"], "char_word_unknown", to=TensorProto.BOOL),
        _op("Not", ["is_space"], "not_space"),
        _op("And", ["char_word_unknown", "not_space"], "in_unknown_word"),
        _op("Concat", ["true", "is_space"], "space_before_or_end", axis=0),
        _op("Slice", ["space_before_or_end", "zero", "n_chars"], "space_before"),
        _op("And", ["space_before", "not_space"], "word_start"),
        _op("Where", ["word_start", "unknown_char", "empty"], "unknown_word_chars"),
        _op("Where", ["in_unknown_word", "unknown_word_chars", "norm_chars"], "word_chars"),
        _op("StringJoin", ["word_chars", "empty", "axis0"], "words", True),
    ]


def _wordpiece(tok: PreTrainedTokenizerFast, normalizer: dict, max_length: int) -> list:
    """3. The op: split at spaces and punctuation (the text has spaces there already), WordPiece, [CLS] [SEP],
    truncation at max_length; then the batch axis of one."""
    ids = dict(tok.vocab)
    return [
        _op(
            "BertTokenizer",
            ["words"],
            ["ids", "type_ids", "mask", "offsets"],
            True,
            vocab_file="\n".join(sorted(ids, key=ids.get)),
            do_lower_case=0,  # the table's job: the op lowercases and strips accents in Latin-1 only (× -> ÷)
            strip_accents=0,
            tokenize_chinese_chars=int(bool(normalizer.get("handle_chinese_chars", True))),
            unk_token=tok.unk_token,
            sep_token=tok.sep_token,
            cls_token=tok.cls_token,
            pad_token=tok.pad_token,
            mask_token=tok.mask_token,
            suffix_indicator="##",
            max_length=int(max_length),
        ),
        _op("Unsqueeze", ["ids", "axis0"], "input_ids"),
        _op("Unsqueeze", ["mask", "axis0"], "attention_mask"),
        _op("Unsqueeze", ["type_ids", "axis0"], "token_type_ids"),
    ]


# --- sessions ----------------------------------------------------------------------------------------------------


def ort_session_options() -> onnxruntime.SessionOptions:
    """`onnxruntime.SessionOptions` with the extensions' custom op library registered (the tokenizer's ops)."""
    import onnxruntime as ort
    import onnxruntime_extensions

    options = ort.SessionOptions()
    options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
    return options


def ort_encode(session: onnxruntime.InferenceSession, texts: list[str], pad_id: int = 0) -> dict[str, np.ndarray]:
    """A batch through an `ort_tokenizer` session: the op takes one sentence per call (two strings would be a
    sentence pair), so loop and pad to the longest like `hf_encode`. Feed object arrays: numpy `str` arrays end a
    string at its first NUL."""
    rows = [session.run(list(TOKEN_OUTPUTS), {TEXT_INPUT: np.array([t], dtype=object)}) for t in texts]
    width = max((row[0].shape[1] for row in rows), default=0)
    out = {name: np.zeros((len(rows), width), np.int64) for name in TOKEN_OUTPUTS}
    out["input_ids"][:] = pad_id
    for i, row in enumerate(rows):
        for name, value in zip(TOKEN_OUTPUTS, row, strict=True):
            out[name][i, : value.shape[1]] = value[0]
    return out


@functools.lru_cache(maxsize=4)
def _bert_tables(model_dir: str, sha256: str) -> dict[str, str]:
    """What BERT's normalizer and word splitting do to every code point, measured on the Hugging Face tokenizer
    itself (so by its Unicode tables, not Python's): the tables and patterns of `ort_tokenizer`. Cached per
    tokenizer.json (`sha256`): tabulating takes a few seconds."""
    tok = hf_tokenizer(Path(model_dir))
    backend = tok.backend_tokenizer
    changed: dict[str, str] = {}  # character -> what the normalizer makes of it, where that differs
    for chunk in chunks([c for c in range(0x110000) if c != 0x7C]):  # "|" joins the chunk (and stays "|")
        out = backend.normalizer.normalize_str("|".join(chunk)).split("|")
        if len(out) != len(chunk):
            raise ValueError("the normalizer joined characters across '|': cannot tabulate it")
        changed.update((ch, o) for ch, o in zip(chunk, out, strict=True) if ch != o)
    punct = _bert_punctuation(backend.pre_tokenizer)

    deleted = sorted(ord(ch) for ch, out in changed.items() if out == "")
    runs = [(a, b) for a, b in spans(deleted) if b - a >= 255]  # the private use areas: a short pattern
    if not any(a <= _DELETED <= b for a, b in runs):
        raise ValueError("U+E000 is not deleted by this normalizer: cannot use it to mark deletions")
    normalize, cjk = [], []
    for ch, out in changed.items():
        if out == "":
            if not any(a <= ord(ch) <= b for a, b in runs):
                normalize.append(f"{ch}\t{chr(_DELETED)}")  # a table value cannot be empty
        elif out == f" {ch} ":  # a CJK ideograph: a pattern of a few ranges puts the spaces around it
            cjk.append(ord(ch))
        elif ch not in "\t\n":  # \t and \n cannot be table keys (they separate it): a pattern maps them
            normalize.append(f"{ch}\t" + "".join(f" {c} " if c in punct else c for c in out))
    # the op's punctuation is not BERT's (other Unicode tables): spaces around all of BERT's
    normalize += [f"{ch}\t {ch} " for ch in sorted(punct) if ch not in changed and ch not in "\t\n"]

    pieces = [t[2:] if t.startswith("##") else t for t in tok.vocab if not _SPECIAL.match(t)]
    known = {t for t in tok.vocab if len(t) == 1} & {t[2:] for t in tok.vocab if len(t) == 3 and t[:2] == "##"}
    if not set("".join(pieces)) <= known:  # then a word fails WordPiece iff it holds a character not known
        raise ValueError("a vocabulary piece holds a character without both 'c' and '##c' entries")
    if _UNKNOWN_WORD in known or "s" not in known or " " in known:
        raise ValueError(f"this vocabulary does not fit the unknown-word pass ({_UNKNOWN_WORD!r}, 's', ' ')")
    classes = [f"{ch}\tk" for ch in sorted(known)] + [" \ts"]
    return {
        "normalize": "\n".join(normalize),
        "delete": re_class(p for a, b in runs for p in range(a, b + 1)),
        "cjk": f"({re_class(cjk)})",
        "classes": "\n".join(classes),
    }


def _bert_punctuation(pre_tokenizer) -> set[str]:
    """The characters BertPreTokenizer splits off as punctuation (ASCII symbols and Unicode P*, by its own tables).
    Planes 0-3 and 14 only: planes 4-13 hold no characters, 15-16 are private use (the normalizer deletes them)."""
    found: set[str] = set()
    points = [c for c in [*range(0x40000), *range(0xE0000, 0xF0000)] if c != 0x71]  # "q" separates them
    for chunk in chunks(points):
        text = "q" + "q".join(chunk)
        for piece, (begin, end) in pre_tokenizer.pre_tokenize_str(text):
            if end - begin == 1 and begin % 2 == 1:
                found.add(piece)
    return found
