"""Deploy faults found in review, each reproduced with real files, a real export and real runtimes:

1. `predict` with a path that names no file (missing, a folder) is an error, not a skipped image;
2. a model whose output is NaN stops `predict` (and `--json` never writes bare NaN);
3. `compile`/`package`/`predict` refuse a model whose export failed its parity check (export.json);
4. `compile --target onnxruntime` takes a model with external data beside it and bundles it self-contained.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgetl.deploy.predictor import Predictor
from edgetl.errors import UserError
from edgetl.export import model as export
from edgetl.export.parity import ParityFailed
from edgetl.export.run import export_run
from edgetl.fileio import sha256_file
from tests.conftest import run_cli
from tests.export.conftest import image_dir, tiny_run  # noqa: F401 - a real trained run (fixtures)
from tests.export.test_export_parity import _scaled_backbone

TARGETS = ("onnxruntime", "openvino")
HEAD_WEIGHT = "pool_head.weight"  # the classifier head's weight in an exported graph


# --- fixtures: real exports of a real (tiny) run ----------------------------------------------------


@pytest.fixture(scope="module")
def real_export(tmp_path_factory, tiny_run) -> Path:  # noqa: F811
    """`edgetl export` of the tiny run: model.onnx plus export.json with passed: true."""
    out = tmp_path_factory.mktemp("real_export") / "model.onnx"
    assert export_run(tiny_run, out, echo=lambda line: None)["passed"]
    return out


@pytest.fixture(scope="module")
def failed_export(tmp_path_factory, tiny_run) -> Path:  # noqa: F811
    """A real export whose onnx-fp32 stage fails (a Mul(1.1) slipped into the backbone): export.json passed false."""
    out = tmp_path_factory.mktemp("failed_export") / "model.onnx"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "export_backbone", _scaled_backbone(export.export_backbone))
        with pytest.raises(ParityFailed):
            export_run(tiny_run, out, echo=lambda line: None)
    assert json.loads((out.parent / "export.json").read_text())["passed"] is False
    return out


def _compile(capsys, model: Path, target: str, out: Path) -> tuple[int, str, str]:
    return run_cli(capsys, "compile", model, "--target", target, "--out", out)


def _cli(*argv) -> int:
    """The CLI in this process, for module-scoped fixtures (capsys is function-scoped): the exit code."""
    from edgetl.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


@pytest.fixture(scope="module")
def real_ort(tmp_path_factory, real_export) -> dict[str, Path]:
    """The real export compiled for ONNX Runtime (folder) and packaged (tar.gz), with the CLI."""
    root = tmp_path_factory.mktemp("real_ort")
    assert _cli("compile", real_export, "--target", "onnxruntime", "--out", root / "ort") == 0
    assert _cli("package", root / "ort", "--out", root / "ort.tar.gz") == 0
    return {"folder": root / "ort", "bundle": root / "ort.tar.gz"}


def _json_lines(out: str) -> list[dict]:
    def refuse(constant: str):
        raise AssertionError(f"--json wrote {constant}, which is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in out.splitlines()]


# --- 1. a path that names no file -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_predict_path_that_is_no_file_is_one_line_exit_2(capsys, tmp_path, real_ort, images, kind):
    bad = tmp_path / "missing.jpg" if kind == "missing" else tmp_path
    # a good image first: the check is up front, so nothing is printed and no runtime is loaded
    code, out, err = run_cli(capsys, "predict", real_ort["bundle"], images["red"], bad)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), err
    assert ("no such file" if kind == "missing" else "is a folder") in err
    assert "skipping" not in err and "onnxruntime on" not in err


def test_predict_undecodable_file_is_still_skipped_or_strict(capsys, real_ort, images):
    code, out, err = run_cli(capsys, "predict", real_ort["bundle"], images["broken"], images["red"])
    assert code == 0 and f"skipping {images['broken']}" in err and out.count("\n") == 1
    code, out, err = run_cli(capsys, "predict", real_ort["bundle"], images["broken"], "--strict")
    assert code == 2 and "drop --strict" in err


def test_predictor_predict_files_refuses_a_missing_path(tmp_path, real_ort, images):
    with Predictor(real_ort["folder"]) as predictor:
        results = predictor.predict_files([images["red"], tmp_path / "nope.png"], 1, False, lambda line: None)
        assert next(results).path == str(images["red"])
        with pytest.raises(UserError, match="nope.png: no such file"):
            next(results)


# --- 2. NaN output --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nan_export(tmp_path_factory, real_export) -> Path:
    """The real export with NaN head weights, its export.json beside it (which no longer describes its bytes)."""
    folder = tmp_path_factory.mktemp("nan_export")
    model = onnx.load(str(real_export))
    weight = next(t for t in model.graph.initializer if t.name == HEAD_WEIGHT)
    weight.CopyFrom(
        numpy_helper.from_array(np.full(numpy_helper.to_array(weight).shape, np.nan, np.float32), weight.name)
    )
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy2(real_export.parent / "export.json", folder / "export.json")
    return folder / "model.onnx"


@pytest.mark.parametrize("target", TARGETS)
def test_predict_stops_on_a_nan_model(capsys, tmp_path, nan_export, images, target):
    code, _, err = _compile(capsys, nan_export, target, tmp_path / "build")
    assert code == 0, err
    assert "changed since `edgetl export`" in err  # the edit broke the link to its parity record
    assert json.loads((tmp_path / "build" / "manifest.json").read_text())["export"] is None
    code, _, err = run_cli(capsys, "package", tmp_path / "build", "--out", tmp_path / "nan.tar.gz")
    assert code == 0, err
    for bundle in (tmp_path / "build", tmp_path / "nan.tar.gz"):
        for extra in ((), ("--json",)):
            code, out, err = run_cli(capsys, "predict", bundle, images["red"], images["green"], *extra)
            assert code == 2
            assert out == "" and _json_lines(out) == []  # nothing printed for a NaN frame, JSON or not
            last = err.strip().splitlines()[-1]
            assert last.startswith(f"error: {images['red']}: the model output is not finite"), err
            assert "bundle is broken" in last and "rebuild" in last


def test_json_output_never_writes_nan():
    from edgetl.deploy.predictor import Prediction

    with pytest.raises(ValueError):
        json.dumps(Prediction("x.jpg", 0, "cat", float("nan")).to_json(), allow_nan=False)


# --- 3. the export's parity verdict ---------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_compile_refuses_a_failed_export(capsys, tmp_path, failed_export, target):
    code, out, err = _compile(capsys, failed_export, target, tmp_path / "build")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    record = failed_export.parent / "export.json"
    assert lines[0].startswith(f"error: {record}: the export of model.onnx failed its parity check (stage onnx-fp32: ")
    assert "max_abs" in lines[0] and "fix the run and re-export" in lines[0]
    assert not (tmp_path / "build").exists()


def test_compile_refuses_a_failed_export_edited_since(capsys, tmp_path, failed_export):
    """export.json names the file: a failed export stays refused when its bytes were touched afterwards."""
    shutil.copy2(failed_export.parent / "export.json", tmp_path / "export.json")
    model = onnx.load(str(failed_export))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "note": "edited"})
    onnx.save(model, str(tmp_path / "model.onnx"))
    assert sha256_file(tmp_path / "model.onnx") != sha256_file(failed_export)
    code, _, err = _compile(capsys, tmp_path / "model.onnx", "onnxruntime", tmp_path / "build")
    assert code == 2 and "failed its parity check (stage onnx-fp32" in err


@pytest.mark.parametrize("target", TARGETS)
def test_compile_records_a_passed_export_in_the_manifest(capsys, tmp_path, real_export, target):
    code, _, err = _compile(capsys, real_export, target, tmp_path / "build")
    assert code == 0 and "note:" not in err, err
    manifest = json.loads((tmp_path / "build" / "manifest.json").read_text())
    record = json.loads((real_export.parent / "export.json").read_text())
    assert manifest["export"] == {
        "passed": True,
        "onnx_sha256": record["onnx_sha256"],
        "stages": [s["name"] for s in record["stages"]],
    }


def test_model_without_a_record_compiles_with_a_note(capsys, tmp_path, colour_onnx):
    code, _, err = _compile(capsys, colour_onnx, "onnxruntime", tmp_path / "build")
    assert code == 0
    assert f"note: no export.json beside {colour_onnx}: no parity record was found" in err
    assert json.loads((tmp_path / "build" / "manifest.json").read_text())["export"] is None


def test_record_of_another_model_is_no_record(capsys, tmp_path, real_export, colour_onnx):
    shutil.copy2(colour_onnx, tmp_path / "colour.onnx")
    shutil.copy2(real_export.parent / "export.json", tmp_path / "export.json")  # about model.onnx, not colour.onnx
    code, _, err = _compile(capsys, tmp_path / "colour.onnx", "onnxruntime", tmp_path / "build")
    assert code == 0 and "describes another model" in err
    assert json.loads((tmp_path / "build" / "manifest.json").read_text())["export"] is None


def test_unreadable_record_is_one_line(capsys, tmp_path, colour_onnx):
    shutil.copy2(colour_onnx, tmp_path / "model.onnx")
    (tmp_path / "export.json").write_text('{"passed": fal')
    code, _, err = _compile(capsys, tmp_path / "model.onnx", "onnxruntime", tmp_path / "build")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unreadable parity record" in err


def _with_manifest(folder: Path, dest: Path, change) -> Path:
    shutil.copytree(folder, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    change(manifest)
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def test_package_and_predict_refuse_a_failed_export_in_the_manifest(capsys, tmp_path, real_ort, images):
    failed = _with_manifest(real_ort["folder"], tmp_path / "failed", lambda m: m["export"].update(passed=False))
    code, _, err = run_cli(capsys, "package", failed, "--out", tmp_path / "failed.tar.gz")
    assert code == 2 and f"error: {failed}: manifest.json records that its model failed the parity check" in err
    assert not (tmp_path / "failed.tar.gz").exists()
    code, out, err = run_cli(capsys, "predict", failed, images["red"])
    assert code == 2 and out == "" and "failed the parity check" in err
    # a bundle made by hand around such a manifest (package would refuse it) is refused by predict too
    bundle = tmp_path / "hand.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for path in sorted(failed.iterdir()):
            tar.add(path, arcname=path.name)
    code, out, err = run_cli(capsys, "predict", bundle, images["red"])
    assert code == 2 and out == "" and f"error: {bundle}: manifest.json records" in err


def test_manifest_without_the_export_key_still_reads(capsys, tmp_path, real_ort, images):
    """Bundles built before compile recorded the verdict keep working."""
    old = _with_manifest(real_ort["folder"], tmp_path / "old", lambda m: m.pop("export"))
    code, _, err = run_cli(capsys, "package", old, "--out", tmp_path / "old.tar.gz")
    assert code == 0, err
    code, out, err = run_cli(capsys, "predict", tmp_path / "old.tar.gz", images["red"])
    assert code == 0 and out.startswith(f"{images['red']}: "), err


# --- 4. external data and ONNX Runtime ------------------------------------------------------------


def _external(model: Path, folder: Path) -> Path:
    """The same model with every initializer in weights.bin beside it, as onnx.save writes it."""
    folder.mkdir()
    onnx.save_model(
        onnx.load(str(model)),
        str(folder / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (folder / "weights.bin").stat().st_size > 0
    return folder / "model.onnx"


def _labels(capsys, bundle: Path, images: dict) -> list[tuple[int, list]]:
    files = [images[name] for name in ("red", "green", "blue")]
    code, out, err = run_cli(capsys, "predict", bundle, *files, "--json")
    assert code == 0, err
    return [(p["label"], [prob for _, prob in p["topk"]]) for p in _json_lines(out)]


def _build(capsys, model: Path, root: Path, name: str) -> tuple[Path, dict]:
    code, _, err = _compile(capsys, model, "onnxruntime", root / name)
    assert code == 0, err
    manifest = json.loads((root / name / "manifest.json").read_text())
    code, _, err = run_cli(capsys, "package", root / name, "--out", root / f"{name}.tar.gz")
    assert code == 0, err
    return root / f"{name}.tar.gz", manifest


@pytest.mark.parametrize("source", ["real_export", "colour_onnx"])
def test_ort_compiles_a_model_with_external_data(capsys, tmp_path, request, images, source):
    inline = request.getfixturevalue(source)
    external = _external(inline, tmp_path / "source")
    inline_bundle, _ = _build(capsys, inline, tmp_path, "inline")
    external_bundle, manifest = _build(capsys, external, tmp_path, "external")
    assert sorted(manifest["files"]) == ["model.onnx"]  # self-contained: the weights are inside model.onnx
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left over
    # the bundle runs away from the source folder (predict unpacks it into a temp folder)
    shutil.rmtree(tmp_path / "source")
    _same_predictions(_labels(capsys, external_bundle, images), _labels(capsys, inline_bundle, images))


def _same_predictions(got: list, expected: list) -> None:
    assert [label for label, _ in got] == [label for label, _ in expected]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in expected], atol=1e-5)


def test_ort_model_over_the_inline_limit_keeps_its_weights_external(capsys, tmp_path, monkeypatch, real_export, images):
    """Over 2 GiB ONNX Runtime writes the optimized weights to model.onnx.data, listed and hashed in the manifest
    (the limits are lowered here so a tiny model takes that path)."""
    from edgetl.deploy.targets import onnxruntime as ort_target

    external = _external(real_export, tmp_path / "source")
    inline_bundle, _ = _build(capsys, real_export, tmp_path, "inline")
    monkeypatch.setattr(ort_target, "INLINE_LIMIT", 0)
    monkeypatch.setattr(ort_target, "EXTERNAL_MIN_BYTES", 32)
    big_bundle, manifest = _build(capsys, external, tmp_path, "big")
    assert sorted(manifest["files"]) == ["model.onnx", "model.onnx.data"]
    assert not (tmp_path / "big" / "source").exists()  # the re-saved source is not shipped
    shutil.rmtree(tmp_path / "source")
    _same_predictions(_labels(capsys, big_bundle, images), _labels(capsys, inline_bundle, images))
