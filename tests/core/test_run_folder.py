"""A run folder is one unit (run.json + the files it names, with their sha256); non-finite values never ship."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetl.errors import UserError
from edgetl.models import heads
from edgetl.records import HEAD, read_run, run_file
from edgetl.train.run import run_train
from tests.core.conftest import make_folder, tiny_cfg


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("runs") / "data", per_class=12)


def test_run_json_names_every_file_with_its_hash_and_keeps_the_fit_short(folder: Path, tmp_path: Path):
    out = tmp_path / "runs" / "r"
    record = run_train(tiny_cfg(folder, out))
    assert set(record["files"]) == {HEAD}
    assert run_file(out, record, HEAD).is_file()
    fit = record["metrics"]["fit"]
    assert fit["solver"] == "lbfgs" and fit["evaluations"] >= fit["iterations"] >= 1
    assert fit["final_loss"] < fit["first_loss"]
    assert "history" not in record["metrics"]  # one row per L-BFGS evaluation made run.json unreadable
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]  # no staging folder left behind


def test_a_run_killed_while_saving_leaves_the_previous_run_intact(folder: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "runs" / "r"
    run_train(tiny_cfg(folder, out))
    (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill at the moment the new head is written

    monkeypatch.setattr("edgetl.records.shutil.copyfile", killed)
    monkeypatch.setattr("edgetl.records.sha256_file", killed)
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_cfg(folder, out, overwrite=True, seed=3))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]
    monkeypatch.undo()
    record = run_train(tiny_cfg(folder, out, overwrite=True, seed=3))
    assert (out / "notes.txt").read_text() == "mine"  # the user's own files are carried over
    assert (
        read_run(out)["config"]["seed"] == 3 and record["files"][HEAD] != json.loads(before["run.json"])["files"][HEAD]
    )


def test_export_refuses_a_head_that_does_not_belong_to_its_run_json(folder: Path, tmp_path: Path):
    from edgetl.export.run import export_run

    run_train(tiny_cfg(folder, tmp_path / "a"))
    run_train(tiny_cfg(folder, tmp_path / "b", seed=5, head="mlp", solver="adamw"))
    (tmp_path / "a" / HEAD).write_bytes((tmp_path / "b" / HEAD).read_bytes())  # the other run's head
    with pytest.raises(UserError, match="does not belong to the run.json beside it"):
        export_run(tmp_path / "a")
    assert not (tmp_path / "a" / "model.onnx").exists()


def test_a_head_with_nan_is_refused_at_export(folder: Path, tmp_path: Path):
    from safetensors.torch import load_file, save_file

    from edgetl.export.run import export_run

    run_train(tiny_cfg(folder, tmp_path / "r"))
    path = tmp_path / "r" / HEAD
    tensors = load_file(str(path))
    tensors["weight"][0, 0] = float("nan")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    save_file(tensors, str(path), metadata=meta)
    record = dict(read_run(tmp_path / "r"))
    record["files"] = {}  # a run from before hashes: only the finite check stands between NaN and a bundle
    (tmp_path / "r" / "run.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="weight 'weight' holds NaN or Inf"):
        export_run(tmp_path / "r")


def test_non_finite_features_stop_training_with_one_line(folder: Path, tmp_path: Path, monkeypatch):
    from edgetl.train import features

    real = features.TorchExtractor.__call__

    def broken(self, x):
        out = real(self, x)
        out[0, 0] = np.inf  # what a backbone with a broken weight produces
        return out

    monkeypatch.setattr(features.TorchExtractor, "__call__", broken)
    with pytest.raises(UserError, match="feature vectors from torch-fp32 hold NaN or Inf"):
        run_train(tiny_cfg(folder, tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_head_bytes_refuses_nan():
    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.bias[1] = float("nan")
    with pytest.raises(UserError, match="weight 'bias' holds NaN"):
        heads.head_bytes(head, heads.head_meta("linear", 4, 2))
