"""Fixtures for the export tests: a real tiny run (test_tiny backbone on a folder of JPEGs of mixed sizes),
its exports, and an INT8 variant of the run whose QDQ backbone is made here with ONNX Runtime's quantize_static
(the same contract as `edgetl train --quantize int8`: `backbone.int8.onnx`, input `input`, output `features`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetl.config import TrainCfg
from edgetl.export import model as export
from edgetl.export.run import export_run
from edgetl.train.run import run_train

COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 50, 200)}
SIZES = [(24, 32), (40, 30), (33, 33)]  # (H, W): frames of several sizes, none equal to the 32x32 input


def _write_images(root: Path, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = SIZES[i % len(SIZES)]
            noise = rng.integers(-60, 60, (h, w, 3))
            Image.fromarray(np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{i}.jpg")
    return root


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("images") / "colours")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, image_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainCfg(
        data=str(image_dir),
        backbone="test_tiny",
        out=out,
        cache_dir=tmp_path_factory.mktemp("cache"),
        epochs=40,
        lr=0.05,
        patience=0,
        progress=False,
    )
    run_train(cfg)
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_run) -> tuple[Path, dict]:
    """The default export (uint8-nhwc) of the tiny run, written outside the run folder."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    return out, export_run(tiny_run, out, echo=lambda line: None)


def _int8_backbone(run: Path, path: Path) -> None:
    """The run's backbone quantized by edgetl's own ONNX Runtime quantizer (QDQ), on random frames."""
    from edgetl.config import QuantizeCfg
    from edgetl.quant.backbone_onnx import export_backbone_onnx
    from edgetl.quant.quantize import quantize

    parts = export.load_run(run)
    fp32 = export_backbone_onnx(parts.backbone, parts.pre, path.with_name("backbone.fp32.onnx"))
    frames = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    quantize(fp32, path, QuantizeCfg(target="onnxruntime", calib_size=32), parts.pre(frames))
    fp32.unlink()


@pytest.fixture(scope="session")
def int8_run(tmp_path_factory, tiny_run) -> Path:
    """The tiny run plus a QDQ backbone and the run.json fields a quantized run carries."""
    run = tmp_path_factory.mktemp("runs") / "tiny-int8"
    shutil.copytree(tiny_run, run)
    _int8_backbone(run, run / "backbone.int8.onnx")
    record = json.loads((run / "run.json").read_text())
    record["quantize"] = {
        "target": "onnxruntime",
        "method": "minmax",
        "calib_size": 32,
        "ignored": [],
        "engine": "onnxruntime",
        "onnx": "backbone.int8.onnx",
    }
    record["metrics"].update(val_acc_fp32=record["metrics"]["val_acc"], int8_agreement=1.0)
    (run / "run.json").write_text(json.dumps(record))
    return run
