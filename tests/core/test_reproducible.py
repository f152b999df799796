"""Same data, seed and options -> the same INT8 model bytes and the same numbers, in another process and at
another thread count; a cache written by another quantization recipe is never reused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgetl.config import QuantizeCfg
from edgetl.quant import quantize
from edgetl.train import int8 as run_int8
from edgetl.train.pipeline import Pipeline
from tests.core.conftest import make_folder, tiny_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("repro") / "data", per_class=12)


def _train_in_new_process(data: Path, root: Path, target: str, threads: int) -> tuple[str, dict]:
    out, cache = root / "run", root / "cache"
    args = ["train", "--data", str(data), "--backbone", "test_tiny", "--quantize", "int8", "--target", target]
    args += ["--calib-size", "16", "--threads", str(threads), "--out", str(out), "--cache-dir", str(cache)]
    env = {**os.environ, "EDGETL_CACHE_DIR": str(cache)}
    r = subprocess.run(
        [sys.executable, "-m", "edgetl", *args, "--no-progress"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    model = (out / "backbone.int8.onnx").read_bytes()
    # no exporter stack traces: they hold this checkout's absolute path, and another clone would differ
    assert b"stack_trace" not in model and os.fsencode(REPO) not in model
    digest = hashlib.sha256(model).hexdigest()
    return digest, json.loads((out / "run.json").read_text())["metrics"]


@pytest.mark.parametrize("target", ["openvino", "tensorrt"])
def test_two_processes_two_thread_counts_quantize_to_the_same_bytes(folder: Path, tmp_path: Path, target: str):
    sha_a, m_a = _train_in_new_process(folder, tmp_path / "a", target, threads=1)
    sha_b, m_b = _train_in_new_process(folder, tmp_path / "b", target, threads=2)
    assert sha_a == sha_b
    for key in ("val_acc", "val_acc_fp32", "int8_agreement", "int8_drop"):
        assert m_a[key] == m_b[key], key


def test_another_recipe_or_model_never_reuses_cached_int8_work(folder: Path, tmp_path: Path, monkeypatch):
    """The INT8 model is keyed by the quantizers' own code (RECIPE), the INT8 features by the model's bytes."""
    cfg = tiny_cfg(folder, tmp_path / "r", quantize=QuantizeCfg(calib_size=16, target="onnxruntime"))
    r = run_int8.Int8Run(Pipeline(cfg))
    items, chash = r.calibration()
    first = r.extractor(r.q, items, chash)
    monkeypatch.setattr(run_int8, "RECIPE", quantize.RECIPE + "-changed")
    second = run_int8.Int8Run(Pipeline(cfg)).extractor(r.q, items, chash)
    assert second.path != first.path  # a new model file, quantized again
    assert second.context()["model_sha256"] == first.context()["model_sha256"]  # same code: same bytes
    monkeypatch.setattr(run_int8, "RECIPE", quantize.RECIPE)
    import onnx

    other = onnx.load(str(first.path))
    other.producer_version += "-other"
    onnx.save(other, str(first.path))  # a different (valid) model under the old key
    third = run_int8.Int8Run(Pipeline(cfg)).extractor(r.q, items, chash)
    assert third.path == first.path
    assert third.context()["model_sha256"] != second.context()["model_sha256"]  # so its features miss
