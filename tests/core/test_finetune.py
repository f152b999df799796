"""`edgetl train --unfreeze N` on the real Lite0 (small real-photo crops at 32 px, so it runs in seconds): the cut-point
cache, the same weights in another process, WiSE-FT's ends, the forgetting report, export of the fine-tuned
blocks, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgetl.contract import FINETUNED_BLOCKS, HEAD_FILE
from tests.conftest import run_cli
from tests.photos import make_photo_folder

FAST = ["--img-size", "32", "--ft-epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("ft") / "photos", per_class=8, size=48)


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory) -> Path:
    """Two fine-tuned runs in two processes (one cache) and a frozen one."""
    root = tmp_path_factory.mktemp("ft-runs")
    for name in ("a", "b"):
        _train(root / name, photos, root / "cache", "--unfreeze", "2", "--wise", "auto")
    _train(root / "frozen", photos, root / "cache")
    return root


def _train(out: Path, data: Path, cache: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "edgetl", "train", "--data", str(data), "--out", str(out), *FAST, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "run.json").read_text())


def _env(cache: Path) -> dict:
    import os

    return {**os.environ, "EDGETL_CACHE_DIR": str(cache)}


def _tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_two_processes_give_the_same_fine_tuned_weights_from_the_cut_cache(runs):
    tmp_path = runs
    a, b = (json.loads((runs / name / "run.json").read_text()) for name in ("a", "b"))
    ft = a["finetune"]
    assert ft["unfreeze"] == 2 and ft["trained"][:2] == ["blocks.5", "blocks.6"]
    assert ft["cache"]["cached"] and ft["cache"]["cut"] == "blocks.5" and ft["cache"]["bytes_per_image"] > 0
    assert b["cache"]["hits"] > a["cache"]["hits"]  # the second run read the cut activations back
    for name in (FINETUNED_BLOCKS, HEAD_FILE):
        ta, tb = _tensors(tmp_path / "a" / name), _tensors(tmp_path / "b" / name)
        assert ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta), name
    owned = ("model.blocks.5.", "model.blocks.6.", "model.conv_head.", "model.bn2.")
    assert all(k.startswith(owned) for k in _tensors(tmp_path / "a" / FINETUNED_BLOCKS))
    # WiSE-FT: alpha 0 is the pretrained network with the LP head: val as frozen, nothing forgotten
    sweep = {row["alpha"]: row for row in ft["wise"]["sweep"]}
    assert sweep[0.0]["val_acc"] == pytest.approx(ft["val_acc_frozen"], abs=1e-6)
    assert sweep[0.0]["forgetting"] == {"agreement": 1.0, "mean_kl": 0.0, "images": 40}
    assert sweep[1.0]["forgetting"]["mean_kl"] > 0  # the fine-tuned blocks moved the ImageNet predictions
    best = max(r["val_acc"] for r in sweep.values())
    assert sweep[ft["wise"]["alpha"]]["val_acc"] >= best - 0.005


def test_the_fine_tuned_blocks_go_into_the_exported_graph(runs, monkeypatch):
    from edgetl.export.run import export_run

    monkeypatch.setenv("EDGETL_CACHE_DIR", str(runs / "cache"))
    run = json.loads((runs / "a" / "run.json").read_text())
    assert "finetune" not in json.loads((runs / "frozen" / "run.json").read_text())
    assert not (runs / "frozen" / FINETUNED_BLOCKS).exists()
    report = export_run(runs / "a", echo=lambda line: None)
    assert report["passed"] and report["stages"][1]["vs_pytorch"]["max_abs"] < 1e-4
    frozen = export_run(runs / "frozen", echo=lambda line: None)
    assert frozen["onnx_sha256"] != report["onnx_sha256"]
    # the graph labels val as the run's own model did (PyTorch rung = the fine-tuned backbone + head)
    assert report["stages"][0]["accuracy"] == pytest.approx(run["metrics"]["val_acc"], abs=0.05)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--unfreeze", "9"], "--unfreeze 9: efficientnet_lite0 has 7 blocks"),
        (["--unfreeze", "-2"], "--unfreeze -2: negative"),
        (["--unfreeze", "two"], "--unfreeze two: give a block count"),
        (["--unfreeze", "2", "--head", "mlp"], "--unfreeze starts from the L-BFGS linear head"),
        (["--wise", "auto"], "--wise interpolates fine-tuned blocks"),
        (["--unfreeze", "1", "--wise", "1.5"], "--wise 1.5"),
        (["--unfreeze", "1", "--backbone", "test_tiny"], "--unfreeze: backbone test_tiny has no timm block groups"),
        (["--unfreeze", "1", "--ft-prefix", "int8"], "--ft-prefix int8 trains the blocks on the INT8 prefix"),
        (["--unfreeze", "all", "--quantize", "int8", "--ft-prefix", "int8"], "--ft-prefix int8: --unfreeze all"),
    ],
)
def test_bad_unfreeze_options_are_one_line_and_write_nothing(photos, tmp_path, capsys, args, expected):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", photos, "--out", out, *FAST, *args)
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert not (out / "run.json").exists()


def test_wise_auto_keeps_the_least_forgetting_within_half_a_point():
    from edgetl.train.finetune import pick_alpha

    rows = [
        {"alpha": 0.0, "val_acc": 0.960, "forgetting": {"agreement": 1.0}},
        {"alpha": 0.5, "val_acc": 0.983, "forgetting": {"agreement": 0.6}},
        {"alpha": 1.0, "val_acc": 0.986, "forgetting": {"agreement": 0.1}},
    ]
    assert pick_alpha(rows, "auto") == 0.5  # 0.983 is within 0.005 of 0.986 and forgets less
    assert pick_alpha(rows, "none") == 1.0 and pick_alpha(rows, "0.25") == 0.25
    rows[1]["val_acc"] = 0.97
    assert pick_alpha(rows, "auto") == 1.0


def test_the_summary_and_audit_of_a_fine_tuned_run(runs):
    from edgetl.train.summary import _finetune_rows

    a, frozen = (json.loads((runs / name / "run.json").read_text()) for name in ("a", "frozen"))
    rows = dict(_finetune_rows(a["finetune"]))
    assert "blocks.5, blocks.6, conv_head, bn2" in rows["fine-tune"] and "B/image cached" in rows["fine-tune"]
    assert "of 40 probe photos" in rows["forgetting"]
    assert _finetune_rows(frozen.get("finetune")) == []
    # near-duplicates are judged on the pretrained features (fine-tuned ones cluster each class)
    assert a["data"]["audit"]["near_duplicates"] == frozen["data"]["audit"]["near_duplicates"]


def test_unfreezing_everything_defaults_to_a_tenth_of_the_learning_rate():
    # --unfreeze all at the blocks' 1e-3 diverged on digits (the linear probe was kept); 1e-4 reached 0.9721
    from edgetl.config import FT_LR, FT_LR_ALL, FT_LR_TEXT, TrainCfg

    assert TrainCfg(unfreeze=3).finetune_lr() == FT_LR == 1e-3
    assert TrainCfg(unfreeze=-1).finetune_lr() == FT_LR_ALL == 1e-4
    assert TrainCfg(unfreeze=2).finetune_lr(text=True) == FT_LR_TEXT == 1e-4  # MiniLM's layers, any N
    assert TrainCfg(unfreeze=-1, ft_lr=3e-4).finetune_lr() == 3e-4  # --ft-lr wins
    assert TrainCfg(unfreeze=1, ft_lr=3e-4).finetune_lr(text=True) == 3e-4


def test_with_int8_the_blocks_train_on_what_the_int8_prefix_computes(photos, tmp_path):
    """--unfreeze N --quantize int8 --ft-prefix int8: the cut-point cache holds the INT8 prefix's activations (the
    shipped numbers, checked against an exact evaluation of the cut INT8 graph), not the FP32 prefix's; the run says
    which."""
    import torch

    from edgetl.config import QuantizeCfg, TrainCfg
    from edgetl.models.backbones.split import split
    from edgetl.quant.backbone_onnx import INPUT
    from edgetl.quant.fidelity import exact as exact_evaluation
    from edgetl.train.features import decode
    from edgetl.train.finetune import cut_name, cut_source
    from edgetl.train.pipeline import Pipeline

    quant = QuantizeCfg(calib_size=16)
    cfg = TrainCfg(data=str(photos), img_size=32, unfreeze=2, quantize=quant, out=tmp_path / "r",
                   cache_dir=tmp_path / "c", progress=False, ft_prefix="int8")  # fmt: skip
    p = Pipeline(cfg)
    backbone = p.backbone()
    prefix = split(backbone, 2)[0]
    extractor, how = cut_source(p, prefix, cut_name(backbone, 2), {})
    assert how.startswith("the INT8 prefix (openvino layout"), how
    _, x = decode(p.ds.val[:4], p.pre, p.skip)
    got = extractor(x)
    exact = exact_evaluation(extractor.path, {INPUT: x.astype(np.float32)})
    with torch.inference_mode():
        fp32 = prefix(torch.from_numpy(x)).numpy()

    def cosine(a, b):
        a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
        return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())

    assert got.shape == fp32.shape and cosine(got, exact) > 0.99  # measured 0.999+
    assert 0.8 < cosine(got, fp32) < 0.9999  # close to the FP32 prefix, but not it

    run = _train(
        tmp_path / "run",
        photos,
        tmp_path / "c",
        "--unfreeze",
        "2",
        "--quantize",
        "int8",
        "--calib-size",
        "16",
        "--ft-prefix",
        "int8",
    )
    assert run["finetune"]["cache"]["computed_by"].startswith("the INT8 prefix (openvino layout")
    assert run["quantize"]["status"] in ("ok", "degraded") and run["metrics"]["val_acc"] > 0.5


def test_by_default_int8_quantizes_the_network_the_fp32_run_fine_tuned(runs, photos):
    """--unfreeze N --quantize int8 (default --ft-prefix fp32): the blocks train on the FP32 prefix's cut cache, so
    the INT8 run fine-tunes exactly the FP32 run's weights, and quantizes that network whole."""
    # every train image calibrates (36): with 16, this 32-px toy's INT8 model collapsed (2 of 12 val labels moved)
    run = _train(runs / "a-int8", photos, runs / "cache", "--unfreeze", "2", "--wise", "auto", "--quantize", "int8")
    assert run["finetune"]["cache"]["computed_by"].startswith("the FP32 prefix (PyTorch); the fine-tuned network")
    assert run["finetune"]["cache"]["cut"] == "blocks.5" and run["quantize"]["status"] in ("ok", "degraded")
    ta, tq = _tensors(runs / "a" / FINETUNED_BLOCKS), _tensors(runs / "a-int8" / FINETUNED_BLOCKS)
    assert ta.keys() == tq.keys() and all(np.array_equal(ta[k], tq[k]) for k in ta)


def test_extract_fills_the_int8_cut_cache_that_train_then_reads(photos, tmp_path):
    cache = tmp_path / "c"
    args = ["--data", str(photos), "--unfreeze", "2", "--quantize", "int8", "--calib-size", "16", "--ft-prefix", "int8"]
    cmd = [sys.executable, "-m", "edgetl", "extract", *args, "--img-size", "32", "--no-progress", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env(cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cut = next(r for r in json.loads(proc.stdout)["rows"] if r["what"].startswith("cut"))
    assert cut["computed_by"].startswith("the INT8 prefix (openvino layout") and cut["computed"] > 0
    run = _train(tmp_path / "run", photos, cache, *args[2:])
    assert run["cache"]["keys"][1] == cut["context"]  # frozen FP32, then the cut: the one extract filled
    assert run["finetune"]["cache"]["computed_by"] == cut["computed_by"]
