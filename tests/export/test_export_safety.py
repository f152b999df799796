"""Refusals: a model in training mode, external data outside the model's folder, a folder without a run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from edgetl.cli.main import cli
from edgetl.errors import UserError
from edgetl.export import model as export
from edgetl.export.run import export_run


def test_training_mode_is_refused(tiny_run, monkeypatch):
    real = export.load_run

    def load_in_training_mode(run_dir):
        parts = real(run_dir)
        parts.backbone.model.stem[1].training = True  # a BatchNorm left in training mode
        return parts

    monkeypatch.setattr(export, "load_run", load_in_training_mode)
    with pytest.raises(UserError, match="training mode.*model.stem.1"):
        export_run(tiny_run)


def test_head_in_training_mode_is_refused(tiny_run):
    parts = export.load_run(tiny_run)
    with pytest.raises(UserError, match="head"):
        export.check_eval(backbone=parts.backbone, head=parts.head.train())


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "link/weights.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, int8_run, location):
    run = tmp_path / "run"
    shutil.copytree(int8_run, run)
    (tmp_path / "secret.bin").write_bytes(np.ones(64, np.float32).tobytes())
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "weights.bin").write_bytes(np.ones(64, np.float32).tobytes())
    (run / "link").symlink_to(tmp_path / "elsewhere")
    model = onnx.load(run / "backbone.int8.onnx")
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    del tensor.float_data[:], tensor.int32_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    onnx.save(model, run / "backbone.int8.onnx")
    with pytest.raises(UserError, match="external data"):
        export_run(run)


def test_not_a_run_folder(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path)], standalone_mode=False)
    assert isinstance(result.exception, UserError) and "run.json" in str(result.exception)


def test_changed_weights_are_refused(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    record = json.loads((run / "run.json").read_text())
    record["backbone"]["weights_sha256"] = "0" * 64
    (run / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="weights changed"):
        export_run(run)
