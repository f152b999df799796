"""Texts as every stage sees them: bytes -> one NFC-normalised string, its content key, and the text spec.

The counterpart of `edgetl.images` and `edgetl.preprocess` for sentence models. Only the standard library
and NumPy are imported here (the `tokenizers` library, Rust, no torch, only when a host tokenizer is asked
for), so training and the device normalise and key a sentence the same way.

`TextPreprocess` is the declared tokenization, stored in run.json, the ONNX metadata and the bundle manifest:
which tokenizer (by the sha256 of its tokenizer.json), how long a sequence may be, truncation, and how token
states are pooled into one feature vector. Tokenization itself runs inside the deployed graph (OpenVINO
tokenizers, ONNX Runtime extensions); on the host only where a runtime has no string ops (TensorRT).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgetl.errors import UserError

TEXT_EXTENSIONS = (".txt",)
TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl")
MAX_TEXT_CHARS = 100_000  # a "sentence" longer than this is a mistake (a whole book in one cell): skipped
MAX_LENGTH_RANGE = (8, 512)  # tokens; BERT-style encoders have 512 positions


class BadText(Exception):
    """A row or file that is not a usable text; the message is the reason shown to the user."""


def normalize_text(text: str) -> str:
    """NFC: the same sentence typed with combining accents or precomposed ones is one text (one cache key)."""
    return unicodedata.normalize("NFC", text).strip()


def text_key(text: str) -> str:
    """The content key of a text: sha256 of its NFC form in UTF-8 (what the feature cache is addressed by)."""
    import hashlib  # here: a device predict needs none (edgetl.deploy.opened)

    return hashlib.sha256(b"text:" + normalize_text(text).encode("utf-8")).hexdigest()


def check_text(text: str) -> str:
    """The normalised text, or BadText with the reason (empty, undecodable bytes, too long)."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):  # surrogateescape'd bytes: the file was not UTF-8 here
        raise BadText("not valid UTF-8 (re-save the file as UTF-8)")
    text = normalize_text(text)
    if not text:
        raise BadText("empty text")
    if len(text) > MAX_TEXT_CHARS:
        raise BadText(f"text of {len(text)} characters (more than {MAX_TEXT_CHARS}); split it into sentences")
    return text


def decode_text(data: bytes) -> str:
    """File bytes (UTF-8, optional BOM) -> normalised text, or BadText."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadText(f"not valid UTF-8 at byte {e.start} (re-save the file as UTF-8)") from None
    return check_text(text)


@dataclass(frozen=True)
class TextPreprocess:
    """The declared tokenization + pooling of a sentence encoder (the text form of `Preprocess`)."""

    tokenizer: str  # family, e.g. "bert-wordpiece-uncased"
    tokenizer_sha256: str  # of tokenizer.json: another vocabulary is another model
    max_length: int = 128  # tokens, [CLS] and [SEP] included; longer texts are truncated
    truncation: bool = True
    padding: str = "longest"  # within a batch; the attention mask keeps padding out of the pooled features
    pooling: str = "mean"  # masked mean of the last hidden states
    normalize: str = "l2"  # pooled vector scaled to unit length (sentence-transformers' Normalize)
    unicode: str = "NFC"
    kind: str = "text"
    tokenizer_file: Path | None = field(default=None, compare=False, repr=False)  # local, never serialized

    def __post_init__(self) -> None:
        lo, hi = MAX_LENGTH_RANGE
        if not lo <= self.max_length <= hi:
            raise UserError(f"--max-length: {self.max_length} is out of range; use {lo}..{hi} tokens")
        if self.kind != "text" or not self.truncation or self.padding != "longest":
            raise UserError("text preprocess: only kind 'text' with truncation and 'longest' padding is supported")
        if self.pooling != "mean" or self.normalize not in ("l2", "none"):
            raise UserError(f"text preprocess: pooling {self.pooling!r}/{self.normalize!r} unsupported")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("tokenizer_file")
        return d

    @classmethod
    def from_dict(cls, d: dict, tokenizer_file: Path | None = None) -> TextPreprocess:
        known = {k: d[k] for k in ("tokenizer", "tokenizer_sha256", "max_length", "truncation", "padding") if k in d}
        extra = {k: d[k] for k in ("pooling", "normalize", "unicode", "kind") if k in d}
        return cls(**known, **extra, tokenizer_file=tokenizer_file)

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def decode_min_size(self) -> None:
        return None  # an image-decoding hint; texts have none

    def __call__(self, texts: list[str]) -> Tokens:
        """Texts -> token ids and attention mask (the host tokenizer: training, and TensorRT on the device)."""
        return host_tokenizer(self).encode(texts)


def is_text_spec(d: dict) -> bool:
    """Is this a text model? edgetl's one answer, read off the preprocessing spec that run.json, the ONNX metadata
    and every bundle manifest carry (RunRecord.is_text, SourceModel.is_text, Predictor.is_text ask here)."""
    return isinstance(d, dict) and d.get("kind") == "text"


@dataclass
class Tokens:
    """A tokenized batch: int64 `input_ids` and `attention_mask` [N, T], padded to the longest row."""

    input_ids: np.ndarray
    attention_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, rows) -> Tokens:
        ids, mask = self.input_ids[rows], self.attention_mask[rows]
        width = max(int(mask.sum(1).max()), 1) if len(mask) else 1  # drop columns that are padding for all rows
        return Tokens(np.ascontiguousarray(ids[:, :width]), np.ascontiguousarray(mask[:, :width]))

    def feeds(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


class HostTokenizer:
    """tokenizer.json run by Hugging Face's `tokenizers` (Rust; no torch, no transformers): truncation at
    max_length, padding to the longest text of the batch. Equal to transformers' fast tokenizer (tested)."""

    def __init__(self, spec: TextPreprocess) -> None:
        if spec.tokenizer_file is None:
            raise UserError("text preprocess: no tokenizer.json at hand; rebuild the bundle with `edgetl compile`")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise UserError("host tokenization needs the tokenizers package: pip install tokenizers") from None
        tok = Tokenizer.from_file(str(spec.tokenizer_file))
        tok.enable_truncation(spec.max_length)
        pad = tok.token_to_id("[PAD]") or 0
        tok.enable_padding(pad_id=pad, pad_token="[PAD]")
        self._tok = tok

    def encode(self, texts: list[str]) -> Tokens:
        if not texts:
            return Tokens(np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64))
        encs = self._tok.encode_batch([normalize_text(t) for t in texts])
        ids = np.array([e.ids for e in encs], np.int64)
        mask = np.array([e.attention_mask for e in encs], np.int64)
        return Tokens(ids, mask)


_TOKENIZERS: dict[tuple, HostTokenizer] = {}


def host_tokenizer(spec: TextPreprocess) -> HostTokenizer:
    key = (str(spec.tokenizer_file), spec.max_length)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = HostTokenizer(spec)
    return _TOKENIZERS[key]


def strings(texts: list[str]) -> np.ndarray:
    """A batch of texts as the string tensor the in-graph tokenizers take (NFC, as in training)."""
    return np.array([normalize_text(t) for t in texts], dtype=str)


def read_preprocess(d: dict, tokenizer_file: Path | None = None):
    """The image `Preprocess` or the `TextPreprocess` a run, a model's metadata or a manifest declares."""
    if is_text_spec(d):
        return TextPreprocess.from_dict(d, tokenizer_file)
    from edgetl.preprocess import Preprocess

    return Preprocess.from_dict(d)
