"""The tables edgetl's native BERT tokenizer op (kernels/tokenizer/) runs on, measured from the tokenizer itself.

BERT's normalizer (clean text, spaces around CJK, NFD + strip accents, lowercase) and pre-tokenizer (split on
whitespace, isolate punctuation) act on each character alone: lowercasing is per character in `tokenizers` (no
final-sigma context) and NFD's reordering only moves combining marks, which BERT then strips. So instead of
carrying Unicode tables of its own, the op gets two per-code-point tables measured here by running the run's own
`tokenizers` normalizer and pre-tokenizer over every code point (planes 0-16, surrogates left out):

- `norm`: [S, 2] int32 (first code point of a run, action): -1 keep, -2 delete, -3 keep between two spaces (CJK),
  k >= 0 replace by the code points pool[k + 1 : k + 1 + pool[k]];
- `classes`: [C, 2] int32 (first code point of a run, class): 0 word, 1 punctuation (a token of its own),
  2 whitespace (splits, dropped).

plus the WordPiece vocabulary (bytes + offsets, id = index), the special ids and the added tokens BERT matches in
the raw text before normalizing ("[MASK]" in a sentence is id 103, not 5 pieces). A tokenizer of another kind
(not BertNormalizer/BertPreTokenizer/WordPiece/[CLS] A [SEP]) is `Unsupported`: the caller falls back to
openvino-tokenizers. tests/text/test_native_tokenizer.py checks the op id for id against transformers.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetl.tokenizer_graphs.tokenizers import chunks

KEEP, DELETE, SPACED = -1, -2, -3
WORD, PUNCT, SPACE = 0, 1, 2
_SEP = "|"  # joins probe characters (probed alone itself): BERT keeps it, and no other character maps to it
LAST_CODE_POINT = 0x10FFFF


class Unsupported(ValueError):
    """This tokenizer is not BERT WordPiece as the native op implements it (the message says what differs)."""


@dataclass(frozen=True)
class BertTables:
    vocab_bytes: np.ndarray  # uint8: the tokens' UTF-8, back to back
    vocab_offsets: np.ndarray  # int32 [V + 1]: token i is vocab_bytes[offsets[i]:offsets[i + 1]]
    norm: np.ndarray  # int32 [S, 2]
    pool: np.ndarray  # int32
    classes: np.ndarray  # int32 [C, 2]
    added: np.ndarray  # int32: ids of the tokens matched verbatim in the raw text (their text is the vocab entry)
    unk_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    max_chars_per_word: int
    prefix: str  # continuing-subword prefix ("##")


def _check(spec: dict) -> None:
    model, post = spec.get("model") or {}, spec.get("post_processor") or {}
    norm, pre = spec.get("normalizer"), spec.get("pre_tokenizer") or {}
    if model.get("type") != "WordPiece":
        raise Unsupported(f"the model is {model.get('type')}, not WordPiece")
    if norm is not None and norm.get("type") != "BertNormalizer":
        raise Unsupported(f"the normalizer is {norm.get('type')}, not BertNormalizer")
    if pre.get("type") != "BertPreTokenizer":
        raise Unsupported(f"the pre-tokenizer is {pre.get('type')}, not BertPreTokenizer")
    single = [next(iter(p.values())).get("id") for p in post.get("single", [])]
    if post.get("type") not in ("TemplateProcessing", "BertProcessing") or (
        post.get("type") == "TemplateProcessing" and single != ["[CLS]", "A", "[SEP]"]
    ):
        raise Unsupported("the post-processor is not [CLS] sentence [SEP]")
    for t in spec.get("added_tokens", []):
        if t.get("normalized") or t.get("lstrip") or t.get("rstrip") or t.get("single_word"):
            raise Unsupported(f"added token {t.get('content')!r} is normalized or stripped")


@functools.lru_cache(maxsize=2)
def _measured(tokenizer_json: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    points = [c for c in range(LAST_CODE_POINT + 1) if not 0xD800 <= c <= 0xDFFF]
    norm, pool = _norm_table(tok.normalizer, points)
    return norm, pool, _class_table(tok.pre_tokenizer, points)


def _norm_table(normalizer, points: list[int]) -> tuple[np.ndarray, np.ndarray]:
    actions: list[int] = []
    pool: list[int] = []

    def normalize(chunk: list[str]) -> list[str]:
        if not normalizer:
            return chunk
        if chunk == [_SEP]:
            return [normalizer.normalize_str(_SEP)]
        out = normalizer.normalize_str(_SEP.join(chunk)).split(_SEP)
        if len(out) != len(chunk):
            raise Unsupported("the normalizer does not act on each character alone")
        return out

    for part in chunks(points):
        chunk = [ch for ch in part if ch != _SEP]
        out = dict(zip(chunk, normalize(chunk), strict=True))
        if _SEP in part:
            out[_SEP] = normalize([_SEP])[0]
        for ch, o in ((ch, out[ch]) for ch in part):
            if o == ch:
                actions.append(KEEP)
            elif not o:
                actions.append(DELETE)
            elif o == f" {ch} ":
                actions.append(SPACED)
            else:
                actions.append(len(pool))
                pool += [len(o), *map(ord, o)]
    return _runs(points, actions, merge=lambda a: a < 0), np.asarray(pool or [0], np.int32)


def _class_table(pre_tokenizer, points: list[int]) -> np.ndarray:
    """Each code point between two 'a's: merged into the word (0), a token alone (1), or dropped (2)."""
    classes = []
    for chunk in chunks(points):
        text = "a" + "a".join(chunk) + "a"  # chunk[i] is at character 2 i + 1
        covered = {}
        for token, (a, b) in pre_tokenizer.pre_tokenize_str(text):
            for pos in range(a, b):
                covered[pos] = PUNCT if (b - a == 1 and token != "a") else WORD
        classes += [covered.get(2 * i + 1, SPACE) for i in range(len(chunk))]
    return _runs(points, classes, merge=lambda a: True)


def _runs(points: list[int], values: list[int], merge) -> np.ndarray:
    """[first code point, value] per run of equal values (gaps, i.e. surrogates, join the run before them)."""
    rows: list[tuple[int, int]] = []
    for c, v in zip(points, values, strict=True):
        if not rows or rows[-1][1] != v or not merge(v):
            rows.append((c, v))
    return np.asarray(rows, np.int32).reshape(-1, 2)


def bert_tables(tokenizer_json: Path) -> BertTables:
    """The native op's tables for a tokenizer.json (a few seconds: every code point is measured once)."""
    text = Path(tokenizer_json).read_text(encoding="utf-8")
    spec = json.loads(text)
    _check(spec)
    model = spec["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise Unsupported("the vocabulary ids are not 0..V-1")
    encoded = [t.encode("utf-8") for t, _ in vocab]
    offsets = np.cumsum([0, *map(len, encoded)]).astype(np.int32)
    ids = model["vocab"]
    added = [t["id"] for t in spec.get("added_tokens", [])]
    if any(i >= len(vocab) or vocab[i][0] != t["content"] for i, t in zip(added, spec["added_tokens"], strict=True)):
        raise Unsupported("an added token is not the vocabulary entry of its id")
    norm, pool, classes = _measured(text)
    return BertTables(
        vocab_bytes=np.frombuffer(b"".join(encoded), np.uint8).copy(),
        vocab_offsets=offsets,
        norm=norm,
        pool=pool,
        classes=classes,
        added=np.asarray(added, np.int32),
        unk_id=ids[model["unk_token"]],
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        pad_id=int((spec.get("padding") or {}).get("pad_id", ids.get("[PAD]", 0))),
        max_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
        prefix=model.get("continuing_subword_prefix") or "##",
    )
