"""`edgetl bench` as users run it: real runtimes, tiny models, JSON shape and exit codes (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgetl.bench.gate import FILE_BLOCKS
from edgetl.cli.main import main
from tests.bench.conftest import CONTRACT
from tests.conftest import FAST_BENCH, run_cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory, bundles, photos) -> Path:
    """One `bench --json` file of the OpenVINO bundle, batches 1 and 2, both modes."""
    path = tmp_path_factory.mktemp("saved") / "bench.json"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "bench",
                str(bundles["openvino"]),
                "--batch",
                "1,2",
                "--images",
                str(photos),
                "--json",
                str(path),
                *FAST_BENCH,
            ]
        )
    assert e.value.code == 0
    return path


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_bench_bundle_writes_the_contract(capsys, tmp_path, bundles, photos, target):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    code, out, _ = run_cli(
        capsys,
        "bench",
        bundles[target],
        "--images",
        photos,
        "--json",
        out_json,
        "--plot",
        out_png,
        "--frame-size",
        "24x32",
        *FAST_BENCH,
    )
    assert code == 0 and "end_to_end" in out and "first call (cold, before warm-up): model b1 " in out
    doc = json.loads(out_json.read_text())
    assert [(r["mode"], r["batch"]) for r in doc["results"]] == [("model", 1), ("end_to_end", 1)]
    for r in doc["results"]:
        assert CONTRACT <= set(r)
        assert r["target"] == target and r["precision"] and r["input_shape"] == [1, 24, 32, 3]
        assert r["iterations"] >= 5 and r["streams"] == 1 and target in r["versions"]
        assert set(r["warmup"]) == WARMUP and r["warmup"]["asked_s"] == 0.0 and r["warmup"]["iterations"] == 1
    assert out_png.stat().st_size > 0


WARMUP = {"asked_s", "ran_s", "iterations", "first_call_ms"}


def test_saved_results_record_the_warm_up(saved):
    for r in json.loads(saved.read_text())["results"]:
        assert set(r["warmup"]) == WARMUP and r["warmup"]["first_call_ms"] >= 0 and r["warmup"]["ran_s"] >= 0


def test_compare_same_file_passes(capsys, saved):
    code, out, _ = run_cli(capsys, "bench", "--compare", saved, saved, "--max-regression", "10%")
    assert code == 0 and out.count(": ok") == 4


def test_compare_slower_candidate_fails(capsys, tmp_path, saved):
    doc = json.loads(saved.read_text())
    for r in doc["results"]:
        r["samples_ms"] = [s * 1.5 for s in r["samples_ms"]]
        r["latency_ms"] = {k: v * 1.5 for k, v in r["latency_ms"].items()}
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(doc))
    code, out, _ = run_cli(capsys, "bench", "--compare", saved, slower, "--json", tmp_path / "gate.json")
    assert code == 1 and "REGRESSION" in out
    assert all(v["regressed"] for v in json.loads((tmp_path / "gate.json").read_text())["verdicts"])


def test_compare_refuses_a_p50_edited_by_hand(capsys, tmp_path, saved):
    """Before: `ok  candidate/baseline p50 1.000 (+0.0%) ... [1.685 -> 2.107 ms]`, the ratio from the samples and
    the bracket from the edited field."""
    doc = json.loads(saved.read_text())
    doc["results"][1]["latency_ms"]["p50"] = round(doc["results"][1]["latency_ms"]["p50"] * 1.25, 4)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    code, out, err = run_cli(capsys, "bench", "--compare", saved, edited)
    assert code == 2 and not out and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert f"{edited}: result 1 (" in line and "latency_ms.p50 is " in line
    assert line.endswith("edited or damaged; re-run edgetl bench")


def test_compare_prints_numbers_from_the_samples_it_compared(capsys, saved):
    code, out, _ = run_cli(capsys, "bench", "--compare", saved, saved)
    for r, line in zip(json.loads(saved.read_text())["results"], out.strip().splitlines(), strict=True):
        paired = len(r["samples_ms"]) >= FILE_BLOCKS * 5
        p50 = np.median(r["samples_ms"]) if paired else r["latency_ms"]["p50"]
        assert f"[{p50:.3f} -> {p50:.3f} ms" in line


@pytest.mark.parametrize("old_side", ["baseline", "candidate"])
def test_compare_accepts_files_written_before_the_warm_up_was_recorded(capsys, tmp_path, saved, old_side):
    doc = json.loads(saved.read_text())
    for r in doc["results"]:
        del r["warmup"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    files = (old, saved) if old_side == "baseline" else (saved, old)
    code, out, err = run_cli(capsys, "bench", "--compare", *files, "--max-regression", "10%")
    assert code == 0 and out.count(": ok") == 4 and not err


def test_compare_other_hardware_needs_force(capsys, tmp_path, saved):
    doc = json.loads(saved.read_text())
    for r in doc["results"]:
        r["cpu"] = {**r["cpu"], "model": "Intel(R) Core(TM) i5-1135G7", "flags": ["avx2", "avx512_vnni"]}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "bench", "--compare", saved, other)
    assert code == 2 and "not comparable" in err and "--force" in err
    code, _, err = run_cli(capsys, "bench", "--compare", saved, other, "--force")
    assert code == 0 and "warning" in err


def test_ab_writes_verdicts(capsys, tmp_path, bundles, photos):
    out = tmp_path / "ab.json"
    code, text, _ = run_cli(
        capsys,
        "bench",
        "--ab",
        bundles["onnxruntime"],
        bundles["onnxruntime"],
        "--rounds",
        "3",
        "--images",
        photos,
        "--json",
        out,
    )
    assert code in (0, 1)  # the decision depends on this machine's noise; its logic is tested on synthetic data
    (entry,) = json.loads(out.read_text())["ab"]
    assert len(entry["verdict"]["ratios"]) == 3 and "model b1" in text


def test_peers_without_run_folder_skips_pytorch(capsys, tmp_path, colour_onnx, bundles, photos):
    out = tmp_path / "peers.json"
    code, text, _ = run_cli(
        capsys,
        "bench",
        "--peers",
        colour_onnx,
        "--bundle",
        bundles["openvino"],
        "--images",
        photos,
        "--rounds",
        "2",
        "--json",
        out,
        "--frame-size",
        "24x32",
        *FAST_BENCH,
    )
    assert code == 0
    doc = json.loads(out.read_text())
    names = {r["name"] for r in doc["results"]}
    assert {"onnxruntime fp32", "onnxruntime quantize_static int8", "openvino default (from fp32 onnx)"} <= names
    assert any(n.startswith("edgetl ") for n in names)
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert "run folder" in skipped["pytorch eager fp32"] and "skipped pytorch eager fp32" in text
    assert all(CONTRACT <= set(r) and r["mode"] == "model" for r in doc["results"])
    # --warmup 0: no untimed calls, the first call is the first timed one, recorded all the same
    assert all(r["warmup"]["iterations"] == 0 and r["warmup"]["first_call_ms"] >= 0 for r in doc["results"])
    assert "first call (cold, before warm-up): " in text


@pytest.mark.parametrize(
    "argv, message",
    [
        ((), "exactly one of"),
        (("--compare", "a.json", "b.json", "--ab", "x", "y"), "exactly one of"),
        (("BUNDLE", "--batch", "0"), "--batch"),
        (("BUNDLE", "--mode", "fast"), "--mode"),
        (("BUNDLE", "--frame-size", "big"), "--frame-size"),
        (("--compare", "SAVED", "SAVED", "--max-regression", "lots"), "--max-regression"),
        (("--compare", "SAVED", "missing.json"), "missing.json"),
        (("BUNDLE", "--bundle", "BUNDLE"), "--bundle"),
        (("missing.tar.gz",), "no such bundle"),
    ],
)
def test_bad_usage_exits_2(capsys, bundles, saved, argv, message):
    subst = {"BUNDLE": str(bundles["openvino"]), "SAVED": str(saved)}
    code, _, err = run_cli(capsys, "bench", *(subst.get(a, a) for a in argv), *FAST_BENCH)
    assert code == 2 and message in err and "Traceback" not in err


def test_bench_runs_without_torch(tmp_path, bundles, photos):
    """On the device: no torch, timm or onnx importable."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent("""
        import sys

        class _Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "timm", "onnx"):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)")

        sys.meta_path.insert(0, _Blocker())
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "edgetl", "bench", str(bundles["openvino"]), "--images", str(photos), *FAST_BENCH]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "end_to_end" in done.stdout


def test_ctrl_c_prints_and_writes_partial_results(capsys, monkeypatch, tmp_path, bundles, photos):
    from edgetl.bench import harness as bench

    real = bench.measure

    def interrupted(case, settings, tick=None):
        measured = real(case, settings, tick)
        measured.interrupted = True  # as if Ctrl-C arrived during the first measurement
        return measured

    monkeypatch.setattr(bench, "measure", interrupted)
    out = tmp_path / "partial.json"
    code, text, _ = run_cli(capsys, "bench", bundles["onnxruntime"], "--images", photos, "--json", out, *FAST_BENCH)
    assert code == 130 and "partial results" in text
    doc = json.loads(out.read_text())
    assert doc["interrupted"] and len(doc["results"]) == 1 and doc["results"][0]["interrupted"]
