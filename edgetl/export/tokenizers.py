"""The run's Hugging Face tokenizer as graphs, so tokenization runs inside the deployed model (training side).

`hf_encode` (transformers' fast tokenizer: truncation at max_length, padding to the longest text) is the reference
every other form must equal id for id (tests/text/test_tokenizers.py):

- `openvino_tokenizer`: `openvino_tokenizers.convert_tokenizer`, a string tensor [N] in, int64 `input_ids`,
  `token_type_ids`, `attention_mask` [N, T] out; `connect_openvino` puts it in front of an encoder. Converted
  from a copy whose BertNormalizer is spelled out step by step (`_openvino_normalizer`): as is, OpenVINO
  case-folds (ς -> σ, µ -> μ), pads all of \\p{Han} (人々は differs) and keeps U+FFFD and private use characters.
- `ort_tokenizer`: ONNX Runtime extensions ops (domain `ai.onnx.contrib`), one string [1] in, the same three int64
  outputs [1, T]. Their `BertTokenizer` op alone is not BERT's tokenizer: it lowercases and strips accents only in
  Latin-1 (ひらがな, Ελληνικά, Русский, 한국어, Latin Extended differ), and a word with an unknown character gives
  its known pieces + [UNK] where BERT gives one [UNK]. So the graph first runs BERT's normalizer as a
  per-character table measured on the Hugging Face normalizer itself, turns every word holding a character
  outside the vocabulary into one unknown character, and only then calls the op, its own normalizing off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnxruntime
    import openvino
    from transformers import PreTrainedTokenizerFast

TOKEN_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXT_INPUT = "text"  # edgetl.contract.TEXT: the string input of a tokenizer-in-the-graph model
ORT_OPSET = 18  # edgetl.export.model.OPSET: the tokenizer graph merges in front of the export graph
CONTRIB = "ai.onnx.contrib"  # onnxruntime-extensions' custom op domain
_DELETED = 0xE000  # private use: the normalizer deletes it, so the table marks deletions with it
_UNKNOWN_WORD = "\u16a0"  # RUNIC LETTER FEHU: a letter outside BERT's vocabulary, so the op makes it one [UNK]
_SPECIAL = re.compile(r"^\[[^\[\]]+\]$")  # [CLS], [unused7]: vocabulary entries that are not text pieces


def hf_tokenizer(model_dir: Path) -> PreTrainedTokenizerFast:
    """transformers' fast tokenizer of a model folder, offline: the reference the in-graph tokenizers must equal."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def hf_encode(tok: PreTrainedTokenizerFast, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Texts -> int64 input_ids / attention_mask / token_type_ids [N, T], truncated at max_length, padded to the
    longest text of the batch: what training fed the encoder, so what every deployed tokenizer must give."""
    enc = tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="np")
    return {name: np.asarray(enc[name], dtype=np.int64) for name in TOKEN_OUTPUTS}


def tokenizer_sha256(model_dir: Path) -> str:
    """sha256 of the folder's tokenizer.json (provenance: another vocabulary or normalizer is another model)."""
    return hashlib.sha256((Path(model_dir) / "tokenizer.json").read_bytes()).hexdigest()


# --- OpenVINO ------------------------------------------------------------------------------------------------------


def openvino_tokenizer(model_dir: Path, max_length: int) -> openvino.Model:
    """The tokenizer as an `openvino.Model`: string tensor [N] (input `text`) -> int64 input_ids, token_type_ids,
    attention_mask [N, T], truncated at max_length (truncation is a state variable defaulting to on: the model
    has one ReadValue/Assign sink) and padded to the longest text of the batch (`use_max_padding=False`).

    Converted from `_openvino_normalizer(tok)`, not from the tokenizer as is: see there. Known difference left:
    openvino_tokenizers caps a word at 100 UTF-8 bytes where BERT caps it at 100 characters (a 51-letter Cyrillic
    word is [UNK] here, pieces in transformers)."""
    import openvino as ov
    import openvino_tokenizers

    model = openvino_tokenizers.convert_tokenizer(
        _openvino_normalizer(hf_tokenizer(model_dir)),
        with_detokenizer=False,
        truncation=True,
        max_length=max_length,
        use_max_padding=False,
        tokenizer_output_type=ov.Type.i64,
    )
    model.input(0).get_tensor().set_names({TEXT_INPUT})  # converted, it is an unnamed Parameter_1
    names = {o.get_any_name(): o.get_element_type() for o in model.outputs}
    if any(names.get(name) != ov.Type.i64 for name in TOKEN_OUTPUTS):
        raise ValueError(f"openvino_tokenizers gave outputs {names}, not int64 {', '.join(TOKEN_OUTPUTS)}")
    return model


_OV_KEEP_LOWERCASE = "\u03c2\u00b5"  # ς, µ (micro sign): lowercase already, case folding makes them σ, μ


def _openvino_normalizer(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A copy of `tok` whose BertNormalizer is spelled out as steps that openvino_tokenizers converts to what BERT
    does (the copy is only a conversion source: its own `$1` is literal in transformers). Converted as is,
    OpenVINO keeps U+FFFD and private use characters (BERT deletes them), puts spaces around all of \\p{Han} (々 and
    〇 too: 人々は differs) where BERT takes fixed CJK ranges, and case-folds instead of lowercasing (ς -> σ in
    every Greek word ending in ς, µ -> μ). So: delete those first, pad BERT's own ranges, and carry ς and µ
    through the case folding as private use placeholders."""
    import copy

    from tokenizers import Regex, normalizers

    spec = json.loads(tok.backend_tokenizer.to_str()).get("normalizer") or {}
    if spec.get("type") != "BertNormalizer":
        return tok
    lowercase = bool(spec.get("lowercase"))
    strip = lowercase if spec.get("strip_accents") is None else bool(spec["strip_accents"])
    keep = [(ch, chr(0xF0000 + i)) for i, ch in enumerate(_OV_KEEP_LOWERCASE)] if lowercase else []
    steps = [normalizers.Replace(Regex(r"[\x{FFFD}\p{Co}]"), "")] if spec.get("clean_text") else []
    steps.append(
        normalizers.BertNormalizer(
            clean_text=bool(spec.get("clean_text")), handle_chinese_chars=False, strip_accents=False, lowercase=False
        )
    )
    if spec.get("handle_chinese_chars"):
        steps.append(normalizers.Replace(Regex(f"({_re_class(_bert_cjk())})"), " $1 "))  # PCRE2 substitution
    steps += [normalizers.Replace(ch, mark) for ch, mark in keep]
    steps += [normalizers.NFD(), normalizers.StripAccents()] if strip else []
    steps += [normalizers.Lowercase()] if lowercase else []
    steps += [normalizers.Replace(mark, ch) for ch, mark in keep]
    out = copy.deepcopy(tok)
    out.backend_tokenizer.normalizer = normalizers.Sequence(steps)
    return out


@functools.lru_cache(maxsize=1)
def _bert_cjk() -> list[int]:
    """The code points BertNormalizer's handle_chinese_chars puts spaces around, measured (planes 0-3)."""
    from tokenizers import normalizers

    pad = normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    found = []
    for chunk in _chunks([c for c in range(0x40000) if c != 0x7C]):
        out = pad.normalize_str("|".join(chunk)).split("|")
        found += [ord(ch) for ch, o in zip(chunk, out, strict=True) if o == f" {ch} "]
    return found


def connect_openvino(tokenizer_model: openvino.Model, encoder_model: openvino.Model) -> openvino.Model:
    """One `openvino.Model`, strings in (input `text`), the encoder's outputs out: each tokenizer output feeds the
    encoder input of the same name. A tokenizer output the encoder does not take (token_type_ids for most sentence
    encoders) is left out of the joined model, never a dangling output. Both models are consumed (rewired in
    place): pass fresh ones."""
    import openvino as ov
    import openvino_tokenizers

    tok_outputs = {o.get_any_name(): o for o in tokenizer_model.outputs}
    enc_inputs = {i.get_any_name(): i for i in encoder_model.inputs}
    missing = [name for name in ("input_ids", "attention_mask") if name not in enc_inputs]
    extra = [name for name in enc_inputs if name not in tok_outputs]
    if missing or extra:
        raise ValueError(
            f"the encoder takes {sorted(enc_inputs)}: it needs input_ids and attention_mask and nothing the "
            f"tokenizer does not give ({sorted(tok_outputs)})"
        )
    for name, port in enc_inputs.items():
        if port.get_element_type() != tok_outputs[name].get_element_type():
            raise ValueError(
                f"encoder input {name} is {port.get_element_type()}, the tokenizer gives "
                f"{tok_outputs[name].get_element_type()}"
            )
    tok_sinks, enc_sinks = list(tokenizer_model.get_sinks()), list(encoder_model.get_sinks())
    if len(enc_inputs) < len(tok_outputs):  # connect_models would crash logging the unused output (.name)
        results = zip(tokenizer_model.get_results(), tokenizer_model.outputs, strict=True)
        kept = [result for result, port in results if port.get_any_name() in enc_inputs]
        tokenizer_model = ov.Model(kept, tok_sinks, list(tokenizer_model.get_parameters()), "tokenizer")
    full = openvino_tokenizers.connect_models(tokenizer_model, encoder_model, name_map={n: n for n in enc_inputs})
    # connect_models builds the joined model from results and parameters only: the tokenizer's truncation
    # ReadValue/Assign pair hangs off no result, and without its sink the CPU plugin refuses the model
    # ("ReadValue node ... doesn't have sibling output")
    full.add_sinks(tok_sinks + enc_sinks)
    full.inputs[0].get_tensor().set_names({TEXT_INPUT})
    return full


# --- ONNX Runtime extensions ---------------------------------------------------------------------------------------


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
    table = _bert_tables(str(Path(model_dir).resolve()), tokenizer_sha256(model_dir))

    def string(name: str, value: str):
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name, TensorProto.STRING, [1], [value.encode()])
        )

    def ints(name: str, values: list[int]):
        return helper.make_node(
            "Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        )

    def op(kind: str, inputs: list[str], outputs: list[str] | str, contrib: bool = False, **attrs):
        outputs = [outputs] if isinstance(outputs, str) else outputs
        return helper.make_node(kind, inputs, outputs, domain=CONTRIB if contrib else "", **attrs)

    def regex(source: str, pattern: str, rewrite: str, out: str) -> list:
        return [
            string(f"{out}_pattern", pattern),
            string(f"{out}_rewrite", rewrite),
            op("StringRegexReplace", [source, f"{out}_pattern", f"{out}_rewrite"], out, True, global_replace=1),
        ]

    def chars(source: str, out: str) -> list:  # a string [1] -> its characters [L]
        return [
            op(
                "StringRegexSplitWithOffsets",
                [source, "one_char", "any_char"],
                [out, f"{out}_begins", f"{out}_ends", f"{out}_rows"],
                True,
            )
        ]

    nodes = [
        string("empty", ""),
        string("space", " "),
        string("unknown_char", _UNKNOWN_WORD),
        string("one_char", "((?s).)"),
        string("any_char", "(?s)."),  # RE2 FindAndConsume splits at the group
        ints("axis0", [0]),
        ints("zero", [0]),
        ints("one", [1]),
        helper.make_node("Constant", [], ["true"], value=helper.make_tensor("true", TensorProto.BOOL, [1], [True])),
        # 1. BertNormalizer, character by character, from a table of what it does to every code point: tabs and
        #    newlines -> space (they cannot be table keys), then the table (lowercase, NFD without nonspacing
        #    marks, whitespace -> space, punctuation padded with spaces, deletions -> U+E000), then delete U+E000
        #    and the private use planes, then spaces around CJK ideographs
        *regex(TEXT_INPUT, "[\\t\\n]", " ", "spaced"),
        *chars("spaced", "raw_chars"),
        op("StringMapping", ["raw_chars"], "mapped_chars", True, map=table["normalize"]),
        op("StringJoin", ["mapped_chars", "empty", "axis0"], "mapped", True),
        *regex("mapped", table["delete"], "", "kept"),
        *regex("kept", table["cjk"], " \\1 ", "cjk_spaced"),
        # 2. WordPiece gives one [UNK] for a word it cannot cover, the op the pieces before + [UNK]: a word (run
        #    of non-spaces) holding a character outside the vocabulary becomes one unknown character
        op("StringConcat", ["space", "cjk_spaced"], "normalized", True),  # >= 1 character: StringEqual needs it
        *chars("normalized", "norm_chars"),
        op("StringMapping", ["norm_chars"], "classes", True, map=table["classes"]),  # known -> "k", " " -> "s"
        string("class_space", "s"),
        string("class_known", "k"),
        op("StringEqual", ["classes", "class_space"], "is_space", True),
        op("StringEqual", ["classes", "class_known"], "is_known", True),
        op("Or", ["is_space", "is_known"], "not_unknown"),
        op("Not", ["not_unknown"], "is_unknown"),
        op("Cast", ["is_unknown"], "unknown_i", to=TensorProto.INT64),
        op("Cast", ["is_space"], "space_i", to=TensorProto.INT64),
        op("CumSum", ["space_i", "zero"], "word"),  # a word's characters share the count of spaces before them
        op("Shape", ["norm_chars"], "n_chars"),
        op("Add", ["n_chars", "one"], "n_words"),
        op("ConstantOfShape", ["n_words"], "no_words", value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
        op("ScatterElements", ["no_words", "word", "unknown_i"], "word_unknown_i", axis=0, reduction="max"),
        op("Gather", ["word_unknown_i", "word"], "char_word_unknown_i", axis=0),
        op("Cast", ["char_word_unknown_i"], "char_word_unknown", to=TensorProto.BOOL),
        op("Not", ["is_space"], "not_space"),
        op("And", ["char_word_unknown", "not_space"], "in_unknown_word"),
        op("Concat", ["true", "is_space"], "space_before_or_end", axis=0),
        op("Slice", ["space_before_or_end", "zero", "n_chars"], "space_before"),
        op("And", ["space_before", "not_space"], "word_start"),
        op("Where", ["word_start", "unknown_char", "empty"], "unknown_word_chars"),
        op("Where", ["in_unknown_word", "unknown_word_chars", "norm_chars"], "word_chars"),
        op("StringJoin", ["word_chars", "empty", "axis0"], "words", True),
        # 3. the op: split at spaces and punctuation (the text has spaces there already), WordPiece, [CLS] [SEP],
        #    truncation at max_length
        op(
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
        op("Unsqueeze", ["ids", "axis0"], "input_ids"),
        op("Unsqueeze", ["mask", "axis0"], "attention_mask"),
        op("Unsqueeze", ["type_ids", "axis0"], "token_type_ids"),
    ]
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


@functools.lru_cache(maxsize=4)
def _bert_tables(model_dir: str, sha256: str) -> dict[str, str]:
    """What BERT's normalizer and word splitting do to every code point, measured on the Hugging Face tokenizer
    itself (so by its Unicode tables, not Python's): the tables and patterns of `ort_tokenizer`. Cached per
    tokenizer.json (`sha256`): tabulating takes a few seconds."""
    tok = hf_tokenizer(Path(model_dir))
    backend = tok.backend_tokenizer
    changed: dict[str, str] = {}  # character -> what the normalizer makes of it, where that differs
    for chunk in _chunks([c for c in range(0x110000) if c != 0x7C]):  # "|" joins the chunk (and stays "|")
        out = backend.normalizer.normalize_str("|".join(chunk)).split("|")
        if len(out) != len(chunk):
            raise ValueError("the normalizer joined characters across '|': cannot tabulate it")
        changed.update((ch, o) for ch, o in zip(chunk, out, strict=True) if ch != o)
    punct = _bert_punctuation(backend.pre_tokenizer)

    deleted = sorted(ord(ch) for ch, out in changed.items() if out == "")
    runs = [(a, b) for a, b in _spans(deleted) if b - a >= 255]  # the private use areas: a short pattern
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
        "delete": _re_class(p for a, b in runs for p in range(a, b + 1)),
        "cjk": f"({_re_class(cjk)})",
        "classes": "\n".join(classes),
    }


def _spans(points: list[int]) -> list[tuple[int, int]]:
    """Sorted code points as (first, last) runs."""
    spans: list[list[int]] = []
    for c in points:
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return [(a, b) for a, b in spans]


def _chunks(points: list[int], size: int = 1 << 16):
    """Code points as lists of characters, surrogates left out (no UTF-8 for them)."""
    chars = [chr(c) for c in points if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), size):
        yield chars[start : start + size]


def _bert_punctuation(pre_tokenizer) -> set[str]:
    """The characters BertPreTokenizer splits off as punctuation (ASCII symbols and Unicode P*, by its own tables).
    Planes 0-3 and 14 only: planes 4-13 hold no characters, 15-16 are private use (the normalizer deletes them)."""
    found: set[str] = set()
    points = [c for c in [*range(0x40000), *range(0xE0000, 0xF0000)] if c != 0x71]  # "q" separates them
    for chunk in _chunks(points):
        text = "q" + "q".join(chunk)
        for piece, (begin, end) in pre_tokenizer.pre_tokenize_str(text):
            if end - begin == 1 and begin % 2 == 1:
                found.add(piece)
    return found


def _re_class(points) -> str:
    """An RE2 character class of code points, as ranges."""
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _spans(sorted(points)))
    return f"[{body}]"
