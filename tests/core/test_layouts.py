"""`train --target A,B`: one head per INT8 layout from the same FP32 features (computed once), each layout's
accuracy and agreement in run.json; `export RUN` exports every layout; `compile RUN --target auto` times every
layout in every runtime here and keeps the fastest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.photos import make_photo_folder

pytest.importorskip("torch")

INT8 = ("--quantize", "int8", "--target", "openvino,onnxruntime", "--calib-size", "16", "--img-size", "96")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "data", per_class=8)


def test_two_layouts_from_one_cache_compute_the_fp32_features_once(capsys, tmp_path, photos):
    cache, run = tmp_path / "cache", tmp_path / "run"
    train = ("train", "--data", photos, "--cache-dir", cache, "--out", run, "--no-progress", *INT8)
    code, out, err = run_cli(capsys, *train)
    assert code == 0, err
    top = json.loads((run / "run.json").read_text())
    sub = json.loads((run / "layouts" / "onnxruntime" / "run.json").read_text())
    assert [r["target"] for r in top["layouts"]] == ["openvino", "onnxruntime"]
    assert top["quantize"]["target"] == "openvino" and sub["quantize"]["target"] == "onnxruntime"
    for row, record in zip(top["layouts"], (top, sub), strict=True):
        assert row["val_acc"] == record["metrics"]["val_acc"] and row["int8_agreement"] > 0.9
    assert "layout onnxruntime" in out
    images = top["data"]["train"] + top["data"]["val"]
    # the onnxruntime layout ran first: it computed the FP32 features; openvino's run read them (hits)
    assert sub["cache"]["misses"] == 2 * images and top["cache"]["misses"] == images
    code, _, err = run_cli(capsys, *train, "--overwrite")  # again, from the same cache: nothing computed
    assert code == 0, err
    again = [json.loads(p.read_text()) for p in (run / "run.json", run / "layouts" / "onnxruntime" / "run.json")]
    assert all(r["cache"]["misses"] == 0 for r in again)

    code, _, err = run_cli(capsys, "export", run)
    assert code == 0, err
    assert (run / "model.onnx").is_file() and (run / "layouts" / "onnxruntime" / "model.onnx").is_file()
    code, _, err = run_cli(capsys, "compile", run, "--target", "auto", "--out", tmp_path / "best")
    assert code == 0, err
    auto = json.loads((tmp_path / "best" / "manifest.json").read_text())["auto"]
    timed = {c["target"] for c in auto["candidates"] if "p50_ms" in c}
    assert timed == {
        f"{rt}/{layout}-layout" for rt in ("openvino", "onnxruntime") for layout in ("openvino", "onnxruntime")
    }
    assert auto["winner"] in timed


def test_a_bad_target_list_is_one_line(capsys):
    code, _, err = run_cli(capsys, "train", "--quantize", "int8", "--target", "openvino,openvino")
    assert code == 2 and "--target openvino,openvino: give one of" in err
    code, _, err = run_cli(capsys, "train", "--target", "openvino,onnxruntime")
    assert code == 2 and "add --quantize int8" in err
