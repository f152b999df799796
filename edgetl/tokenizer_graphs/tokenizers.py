"""The run's Hugging Face tokenizer as graphs, so tokenization runs inside the deployed model (training side).

`hf_encode` (transformers' fast tokenizer: truncation at max_length, padding to the longest text) is the reference
every other form must equal id for id (tests/text/test_tokenizers.py):

- `openvino_tokenizer`: `openvino_tokenizers.convert_tokenizer`, a string tensor [N] in, int64 `input_ids`,
  `token_type_ids`, `attention_mask` [N, T] out; `edgetl.deploy.targets.openvino.connect_tokenizer` puts it in
  front of an encoder. Converted
  from a copy whose BertNormalizer is spelled out step by step (`_openvino_normalizer`): as is, OpenVINO
  case-folds (ς -> σ, µ -> μ), pads all of \\p{Han} (人々は differs) and keeps U+FFFD and private use characters.
- `edgetl.tokenizer_graphs.ort_tokenizer`: the same tokenizer on ONNX Runtime-extensions ops.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetl.contract import TOKENIZER_JSON

if TYPE_CHECKING:
    import openvino
    from transformers import PreTrainedTokenizerFast

TOKEN_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXT_INPUT = "text"  # edgetl.contract.TEXT: the string input of a tokenizer-in-the-graph model


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
    return hashlib.sha256((Path(model_dir) / TOKENIZER_JSON).read_bytes()).hexdigest()


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
        steps.append(normalizers.Replace(Regex(f"({re_class(_bert_cjk())})"), " $1 "))  # PCRE2 substitution
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
    for chunk in chunks([c for c in range(0x40000) if c != 0x7C]):
        out = pad.normalize_str("|".join(chunk)).split("|")
        found += [ord(ch) for ch, o in zip(chunk, out, strict=True) if o == f" {ch} "]
    return found


def spans(points: list[int]) -> list[tuple[int, int]]:
    """Sorted code points as (first, last) runs."""
    spans: list[list[int]] = []
    for c in points:
        if spans and spans[-1][1] == c - 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return [(a, b) for a, b in spans]


def chunks(points: list[int], size: int = 1 << 16):
    """Code points as lists of characters, surrogates left out (no UTF-8 for them)."""
    chars = [chr(c) for c in points if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), size):
        yield chars[start : start + size]


def re_class(points) -> str:
    """An RE2 character class of code points, as ranges."""
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in spans(sorted(points)))
    return f"[{body}]"
