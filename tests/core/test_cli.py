"""The training CLI as a user runs it: exit codes, one-line errors, help with examples, run.json contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def edgetl(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGETL_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "edgetl", *args], capture_output=True, text=True, env=env)


def test_train_writes_the_run_json_contract(image_folder: Path, tmp_path: Path, isolated_cache: Path):
    out = tmp_path / "run"
    r = edgetl(
        "train",
        "--data",
        str(image_folder),
        "--backbone",
        "test_tiny",
        "--epochs",
        "3",
        "--out",
        str(out),
        "--cache-features",
        cache=isolated_cache,
    )
    assert r.returncode == 0, r.stderr
    run = json.loads((out / "run.json").read_text())
    for key in ("config", "classes", "preprocess", "backbone", "metrics", "cache", "data", "timing"):
        assert key in run
    assert run["classes"] == ["blue", "green", "red"]
    assert run["config"]["data"] == str(image_folder) and run["config"]["epochs"] == 3
    assert set(run["backbone"]) >= {"name", "weights_sha256"}
    assert 0 <= run["metrics"]["val_acc"] <= 1
    assert run["cache"]["misses"] == 36 and run["cache"]["hits"] == 0
    assert run["data"]["skipped"] == []
    assert {"extract_s", "train_s", "total_s"} <= set(run["timing"])
    assert (out / "head.safetensors").stat().st_size > 0
    assert "val accuracy" in r.stdout  # the one-screen summary


def test_existing_run_is_not_overwritten(image_folder: Path, tmp_path: Path, isolated_cache: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    r = edgetl("train", "--data", str(image_folder), "--backbone", "test_tiny", "--out", str(out), cache=isolated_cache)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: --out {out}: already holds a run (run.json); choose another folder or pass --overwrite"
    ]
    assert (out / "run.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/photos"], "--data: /nonexistent/photos does not exist"),
        (["--backbone", "efficientnet_lite1"], "did you mean 'efficientnet_lite0'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--quant-ignore", "x"], "--quant-ignore needs --quantize int8"),
        (["--head", "mlp", "--solver", "lbfgs"], "--solver lbfgs fits a linear head only"),
        (["--quantize", "int8", "--calib-size", "3"], "--calib-size 3: too small"),
        (["--head", "transformer"], "Invalid value for '--head'"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str, isolated_cache: Path):
    r = edgetl("train", *args, cache=isolated_cache)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "command",
    [["train"], ["cache"], ["cache", "prune"], ["export"], ["compile"], ["predict"], ["bench"], ["doctor"], ["demo"]],
)
def test_every_command_has_help(command: list[str], isolated_cache: Path):
    r = edgetl(*command, "--help", cache=isolated_cache)
    assert r.returncode == 0 and "edgetl" in r.stdout


def test_train_help_shows_examples(isolated_cache: Path):
    r = edgetl("train", "--help", cache=isolated_cache)
    assert "edgetl train --data ~/photos/parts --cache-features --out runs/parts" in r.stdout
    assert "--head mlp --epochs 30" in r.stdout


def test_config_file_sets_options_and_flags_override_it(image_folder: Path, tmp_path: Path, isolated_cache: Path):
    cfg = tmp_path / "parts.yaml"
    cfg.write_text(f"data: {image_folder}\nbackbone: test_tiny\nepochs: 2\nimg-size: 40\n")
    out = tmp_path / "run"
    r = edgetl("train", "--config", str(cfg), "--epochs", "3", "--out", str(out), "--no-progress", cache=isolated_cache)
    assert r.returncode == 0, r.stderr
    config = json.loads((out / "run.json").read_text())["config"]
    assert (config["backbone"], config["img_size"], config["epochs"]) == ("test_tiny", 40, 3)


def test_config_file_with_an_unknown_option_is_refused(tmp_path: Path, isolated_cache: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochz: 3\n")
    r = edgetl("train", "--config", str(cfg), cache=isolated_cache)
    assert r.returncode == 2 and "unknown option(s) epochz" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_the_traceback_behind_a_user_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx model")
    args = ("compile", str(bad), "--target", "onnxruntime", "--out", str(tmp_path / "out"))
    plain = edgetl(*args, cache=tmp_path / "c")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"error: {bad}: not a readable ONNX model (DecodeError); re-run `edgetl export`"
    ]
    debug = edgetl("--debug", *args, cache=tmp_path / "c")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "DecodeError" in debug.stderr.splitlines()[-2]
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()
    assert not (tmp_path / "out").exists()
