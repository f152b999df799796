"""`train --target A,B`: one head per INT8 layout from the same FP32 features (computed once), each layout's
accuracy and agreement in run.json; `export RUN` exports every layout, and the run's FP32 model once
(model.fp32.onnx: the FP32 backbone + the head fitted on FP32 features); `compile RUN --target auto` times every
layout and the FP32 model in every runtime here and keeps the fastest."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest

from edgetl.contract import EXPORT_JSON, FP32_EXPORT, HEAD_FP32, MODEL_FP32, MODEL_ONNX
from edgetl.machine import int8_dot
from tests.conftest import run_cli
from tests.photos import make_photo_folder

pytest.importorskip("torch")

INT8 = ("--quantize", "int8", "--target", "openvino,onnxruntime", "--calib-size", "16", "--img-size", "96")
RUNTIMES = ("openvino", "onnxruntime")


def cli(*argv) -> str:
    """`edgetl ARGV...` in this process, for a module fixture (capsys is per test): stdout + stderr; exit 0."""
    from edgetl.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    assert done.value.code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos") / "data", per_class=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photos) -> SimpleNamespace:
    """Two layouts trained twice from one cache (the second time: every feature a hit), then exported."""
    tmp = tmp_path_factory.mktemp("layouts")
    cache, run = tmp / "cache", tmp / "run"
    train = ("train", "--data", photos, "--cache-dir", cache, "--out", run, "--no-progress", *INT8)
    out = cli(*train)
    first = [json.loads(p.read_text()) for p in (run / "run.json", run / "layouts" / "onnxruntime" / "run.json")]
    cli(*train, "--overwrite")  # again, from the same cache: nothing computed
    again = [json.loads(p.read_text()) for p in (run / "run.json", run / "layouts" / "onnxruntime" / "run.json")]
    exported = cli("export", run)
    return SimpleNamespace(run=run, out=out, first=first, again=again, exported=exported)


def one_layout_copy(run: Path, dest: Path) -> Path:
    """The run folder without its other layouts: one INT8 graph (and the FP32 model)."""
    shutil.copytree(run, dest, ignore=lambda folder, names: ["layouts"] if Path(folder) == run else [])
    return dest


def test_two_layouts_from_one_cache_compute_the_fp32_features_once(trained):
    top, sub = trained.first
    assert [r["target"] for r in top["layouts"]] == ["openvino", "onnxruntime"]
    assert top["quantize"]["target"] == "openvino" and sub["quantize"]["target"] == "onnxruntime"
    for row, record in zip(top["layouts"], (top, sub), strict=True):
        assert row["val_acc"] == record["metrics"]["val_acc"] and row["int8_agreement"] > 0.9
    assert "layout onnxruntime" in trained.out
    images = top["data"]["train"] + top["data"]["val"]
    # the onnxruntime layout ran first: it computed the FP32 features; openvino's run read them (hits)
    assert sub["cache"]["misses"] == 2 * images and top["cache"]["misses"] == images
    assert all(r["cache"]["misses"] == 0 for r in trained.again)


def test_export_writes_the_fp32_model_once_with_an_fp32_runs_parity(trained):
    run = trained.run
    assert (run / MODEL_ONNX).is_file() and (run / "layouts" / "onnxruntime" / MODEL_ONNX).is_file()
    assert not (run / "layouts" / "onnxruntime" / MODEL_FP32).exists()  # the same FP32 model: exported once
    record = json.loads((run / "run.json").read_text())
    assert record["quantize"]["fp32_head"] == HEAD_FP32 and HEAD_FP32 in record["files"]
    assert record["files"][HEAD_FP32] != record["files"]["head.safetensors"]  # fitted on other features
    fp32 = json.loads((run / EXPORT_JSON).read_text())[FP32_EXPORT]
    assert fp32["model"] == MODEL_FP32 and fp32["head"] == HEAD_FP32 and fp32["precision"] == "fp32"
    assert fp32["passed"] is True and [s["name"] for s in fp32["stages"]] == ["pytorch-fp32", "onnx-fp32"]
    onnx_fp32 = fp32["stages"][1]["vs_pytorch"]
    assert onnx_fp32["max_abs"] <= 1e-4 and onnx_fp32["top1_agreement"] == 1.0
    model = onnx.load(str(run / MODEL_FP32))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["edgetl"])
    assert meta["precision"] == "fp32" and meta["quantize"] is None and meta["run_id"] == record["run_id"]
    assert f"{MODEL_FP32} (the FP32 model" in trained.exported


def test_compiling_the_fp32_model_by_hand_carries_its_own_parity_verdict(capsys, trained, tmp_path):
    code, _, err = run_cli(
        capsys, "compile", trained.run / MODEL_FP32, "--target", "onnxruntime", "--out", tmp_path / "f"
    )
    assert code == 0 and "parity" not in err, err  # no "describes another model" / "unchecked" note
    export = json.loads((tmp_path / "f" / "manifest.json").read_text())["export"]
    assert export["passed"] is True and export["stages"] == ["pytorch-fp32", "onnx-fp32"]


def test_auto_times_every_layout_and_the_fp32_model_in_every_runtime(capsys, trained, tmp_path):
    code, _, err = run_cli(capsys, "compile", trained.run, "--target", "auto", "--out", tmp_path / "best")
    assert code == 0, err
    auto = json.loads((tmp_path / "best" / "manifest.json").read_text())["auto"]
    rows = {c["target"]: c for c in auto["candidates"]}
    timed = {name for name, c in rows.items() if "p50_ms" in c}
    layouts = {f"{rt}/{layout}-layout" for rt in RUNTIMES for layout in RUNTIMES}
    fp32s = {f"{rt}/fp32" for rt in RUNTIMES}
    assert fp32s <= timed <= layouts | fp32s
    for name in layouts - timed:  # only where this CPU's INT8 kernels can saturate (no VNNI): dropped, with why
        assert int8_dot() != "vnni" and "INT8 probe not faithful" in rows[name]["dropped"], rows[name]
    assert auto["winner"] in timed
    assert "not usable here" in rows["tensorrt/fp32"]["dropped"]
    for name in timed:  # what each ran at here: OpenVINO runs an FP32 graph in bf16 where the CPU has AVX512-BF16
        fp32 = name.endswith("/fp32")
        assert rows[name]["model_precision"] == ("fp32" if fp32 else "int8")
        assert rows[name]["precision"].startswith("int8") is not fp32
    assert rows["onnxruntime/fp32"]["precision"] == "fp32"


def test_a_run_without_the_fp32_model_compiles_its_int8_graph_only(capsys, trained, tmp_path, monkeypatch):
    from edgetl.bench import auto

    run = one_layout_copy(trained.run, tmp_path / "run")
    graphs = auto.sources(run)  # with the FP32 model: INT8 candidates keep their names, INT8 stays the default
    assert [(g.graph.name, g.suffix, g.ruled_out) for g in graphs] == [
        (MODEL_ONNX, "", None),
        (MODEL_FP32, "/fp32", None),
    ]
    assert auto.default_candidate(graphs) == "openvino"
    (run / MODEL_FP32).write_bytes(b"changed")
    assert "changed since `edgetl export`" in auto.sources(run)[1].ruled_out

    # as an older edgetl trained and exported it: no FP32 head, no FP32 model, no record of one
    (run / HEAD_FP32).unlink()
    (run / MODEL_FP32).unlink()
    record = json.loads((run / EXPORT_JSON).read_text())
    (run / EXPORT_JSON).write_text(json.dumps({k: v for k, v in record.items() if k != FP32_EXPORT}))
    monkeypatch.setattr(auto, "BLOCK_S", 0.02)  # a smoke-test budget: which candidates run, not how fast
    monkeypatch.setattr(auto, "WARMUP_S", 0.05)
    code, _, err = run_cli(capsys, "compile", run, "--target", "auto", "--out", tmp_path / "best")
    assert code == 0, err
    auto_record = json.loads((tmp_path / "best" / "manifest.json").read_text())["auto"]
    assert {c["target"] for c in auto_record["candidates"]} == {"openvino", "onnxruntime", "tensorrt"}
    assert {c["target"] for c in auto_record["candidates"] if "p50_ms" in c} == set(RUNTIMES)


def test_a_damaged_or_missing_fp32_head_is_one_line(capsys, trained, tmp_path):
    from edgetl.export.model import load_fp32_head, load_run

    run = one_layout_copy(trained.run, tmp_path / "run")
    head = run / HEAD_FP32
    head.write_bytes(head.read_bytes()[:100])  # truncated
    code, _, err = run_cli(capsys, "export", run)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()
    assert len(line) == 1 and str(head) in line[0] and "re-run `edgetl train`" in line[0]

    head.unlink()  # removed by hand: the INT8 graph is still exported, without the FP32 model
    notes: list[str] = []
    assert load_fp32_head(load_run(run), notes.append) is None
    assert notes and f"{head} is missing" in notes[0]


def test_a_bad_target_list_is_one_line(capsys):
    code, _, err = run_cli(capsys, "train", "--quantize", "int8", "--target", "openvino,openvino")
    assert code == 2 and "--target openvino,openvino: give one of" in err
    code, _, err = run_cli(capsys, "train", "--target", "openvino,onnxruntime")
    assert code == 2 and "add --quantize int8" in err
