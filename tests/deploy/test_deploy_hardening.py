"""Bundles built by someone hostile, damaged manifests and runtimes that fail: one line each, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetl.cli import main as cli_module
from edgetl.deploy.artifact import MANIFEST, read_manifest, write_manifest
from edgetl.deploy.bundle import package
from edgetl.deploy.onnx_safety import check_bundled_onnx, check_external_data, external_locations
from edgetl.deploy.predictor import Predictor
from edgetl.deploy.targets import Artifact, CompileOptions, get_target, registry
from edgetl.errors import UserError
from tests.conftest import run_cli
from tests.deploy.conftest import COLOURS

KEPT = ("format", "edgetl_version", "created", "files")


@pytest.fixture(scope="module")
def ort_build(tmp_path_factory, colour_onnx) -> Path:
    root = tmp_path_factory.mktemp("ort-build")
    return get_target("onnxruntime").compile(colour_onnx, root / "ort", CompileOptions()).root


@pytest.fixture(scope="module")
def ov_build(tmp_path_factory, colour_onnx) -> Path:
    root = tmp_path_factory.mktemp("ov-build")
    return get_target("openvino").compile(colour_onnx, root / "ov", CompileOptions()).root


def _copy(build: Path, dest: Path) -> Path:
    shutil.copytree(build, dest)
    return dest


def _rehash(folder: Path, **changes) -> dict:
    """What a hostile builder does: change the folder, then write a manifest whose hashes match it."""
    fields = {k: v for k, v in read_manifest(folder, folder).items() if k not in KEPT}
    return write_manifest(folder, {**fields, **changes})


def _point_weight_at(model_path: Path, location: str) -> None:
    """Rewrite the model so its classifier weight claims to live in `location` (as an attacker would)."""
    model = onnx.load(model_path)
    weight = next(t for t in model.graph.initializer if t.name == "fc_w")
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    del weight.external_data[:]
    for key, value in (("location", location), ("offset", "0"), ("length", "36")):
        weight.external_data.add(key=key, value=value)
    onnx.save(model, model_path)


# --- 1. ONNX Runtime bundles and external data ---------------------------------------------------


@pytest.mark.parametrize(
    ("location", "message"),
    [("/etc/hostname", "absolute path"), ("../x", "'..'"), ("sub/../../x", "'..'")],
)
def test_ort_bundle_reading_files_outside_itself_is_refused(tmp_path, ort_build, images, location, message):
    (tmp_path / "x").write_bytes(b"\0" * 64)
    folder = _copy(ort_build, tmp_path / "b" / "hostile")
    _point_weight_at(folder / "model.onnx", location)
    _rehash(folder)  # hashes prove integrity, not trust: the manifest is as hostile as the model
    package(folder, tmp_path / "hostile.tar.gz")
    for bundle in (folder, tmp_path / "hostile.tar.gz"):
        with pytest.raises(UserError, match=message):
            Predictor(bundle)


def test_ort_bundle_external_data_through_a_symlink_is_refused(tmp_path, ort_build):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    folder = _copy(ort_build, tmp_path / "hostile")
    _point_weight_at(folder / "model.onnx", "weights.bin")
    _rehash(folder)
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")  # added after hashing: write_manifest refuses links
    with pytest.raises(UserError, match="symlink"):
        Predictor(folder)


def test_ort_bundle_external_data_must_be_listed_in_the_manifest(tmp_path, ort_build):
    folder = _copy(ort_build, tmp_path / "hostile")
    _point_weight_at(folder / "model.onnx", "weights.bin")
    _rehash(folder)
    (folder / "weights.bin").write_bytes(b"\0" * 64)  # inside the folder but not listed (so never hash-checked)
    with pytest.raises(UserError, match="not a file listed"):
        Predictor(folder)


def test_ort_bundle_with_its_own_listed_external_data_loads(tmp_path, ort_build, images):
    folder = _copy(ort_build, tmp_path / "external")
    model = onnx.load(folder / "model.onnx")
    (folder / "weights").mkdir()
    onnx.save(model, folder / "model.onnx", save_as_external_data=True, location="weights/data.bin", size_threshold=64)
    manifest = _rehash(folder)
    assert "weights/data.bin" in manifest["files"]
    package(folder, tmp_path / "external.tar.gz")
    with Predictor(tmp_path / "external.tar.gz") as predictor:
        (p,) = predictor.predict_files([images["red"]], 1, True, print)
    assert p.class_name == "red" and list(COLOURS)[p.label] == "red"


def _nested_model(folder: Path) -> Path:
    """External tensors in every place a runtime may read them: initializer, sparse initializer, a Constant in
    an If branch, a function body's Constant."""

    def external(name: str, location: str) -> onnx.TensorProto:
        t = numpy_helper.from_array(np.ones((2,), np.float32), name)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        return t

    sparse = helper.make_sparse_tensor(external("sv", "sparse.bin"), numpy_helper.from_array(np.asarray([0])), [2])
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=external("k", "branch.bin"))],
        "branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [external("w", "init.bin")],
        sparse_initializer=[sparse],
    )
    function = helper.make_function(
        "custom",
        "F",
        [],
        ["o"],
        [helper.make_node("Constant", [], ["o"], value=external("f", "../function.bin"))],
        [helper.make_opsetid("", 18)],
    )
    model = helper.make_model(graph, functions=[function], opset_imports=[helper.make_opsetid("", 18)])
    path = folder / "model.onnx"
    onnx.save(model, path)
    return path


def test_external_locations_finds_nested_tensors_without_onnx(tmp_path):
    path = _nested_model(tmp_path)
    assert sorted(external_locations(path)) == ["../function.bin", "branch.bin", "init.bin", "sparse.bin"]
    listed = {}
    for name in ("branch.bin", "init.bin", "sparse.bin"):
        (tmp_path / name).write_bytes(b"\0" * 8)
        listed[name] = "sha256"
    with pytest.raises(UserError, match="'..'"):
        check_bundled_onnx(path, tmp_path, listed, "bundle")
    with pytest.raises(UserError, match="'init.bin', which is not a file listed"):
        check_bundled_onnx(path, tmp_path, {"branch.bin": "sha256"}, "bundle")


def test_external_locations_agrees_with_onnx(colour_onnx, colour_int8_onnx):
    for model in (colour_onnx, colour_int8_onnx):
        assert external_locations(model) == [] == check_external_data(model)


def test_external_locations_refuses_garbage(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # field 7 claiming 4 GiB of graph
    with pytest.raises(UserError, match="not a readable ONNX model"):
        external_locations(bad)


# --- 2. OpenVINO native extensions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        ("/tmp/evil.so", "unsafe file name"),
        ("../x.so", "unsafe file name"),
        ("extensions/unlisted.so", "not a file listed"),
        (["x.so"], "must be a file name"),
    ],
)
def test_openvino_extension_must_be_a_listed_bundle_file(tmp_path, ov_build, extension, message):
    folder = _copy(ov_build, tmp_path / "ov")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["settings"]["extension"] = extension
    with pytest.raises(UserError, match=message):
        get_target("openvino").load(Artifact(folder, manifest))


# --- 6. damaged manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        {"input": {"name": "image"}},
        {"input": "uint8"},
        {"classes": None},
        {"preprocess": {"size": "big"}},
        {"input": {"name": "image", "format": "uint8-nhwc", "frame_size": [1]}},
        {"input": {"name": "image", "format": "jpeg"}},
    ],
)
def test_damaged_manifest_is_one_line_and_cleans_up(tmp_path, monkeypatch, ort_build, damage):
    folder = _copy(ort_build, tmp_path / "damaged")
    _rehash(folder, **damage)
    package(folder, tmp_path / "damaged.tar.gz")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(UserError, match="manifest.json"):
        Predictor(tmp_path / "damaged.tar.gz")
    assert not list(temp.iterdir())  # the unpacked bundle is gone


# --- 7. runtime failures ----------------------------------------------------------------------------


def test_openvino_build_check_failure_is_one_line(colour_onnx):
    import openvino as ov

    model = ov.convert_model(str(colour_onnx))
    spec = {"name": "image", "format": "uint8-nhwc", "frame_size": [16, 16]}
    with pytest.raises(UserError, match="--device CPU: OpenVINO cannot compile or run") as e:
        get_target("openvino")._check_compiles(model, "CPU", {"performance_hint": "NOT_A_HINT"}, spec, None)
    assert "\n" not in str(e.value)


def test_tensorrt_without_a_usable_gpu_is_one_line(monkeypatch, tmp_path):
    from edgetl.deploy.targets import tensorrt as trt_target

    def no_gpu():
        raise RuntimeError("CUDA cudaGetDevice failed: cudaErrorNoDevice")

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace())
    monkeypatch.setattr(trt_target.TensorRTTarget, "available", lambda self: None)
    monkeypatch.setattr(trt_target, "device_identity", no_gpu)
    artifact = Artifact(tmp_path, {"target": "tensorrt", "settings": {}, "files": {}})
    with pytest.raises(UserError, match="no usable GPU here .*cudaErrorNoDevice"):
        get_target("tensorrt").load(artifact)


def test_doctor_turns_a_failing_device_list_into_a_row(capsys, monkeypatch):
    target = registry().get("openvino")

    def broken(self):
        raise RuntimeError("plugin exploded\nwith details")

    monkeypatch.setattr(type(target), "devices", broken)
    code, out, _ = run_cli(capsys, "doctor")
    row = next(line for line in out.splitlines() if line.startswith("openvino"))
    assert code == 0 and "missing" in row and "RuntimeError: plugin exploded" in row


# --- 9, 12. the CLI ------------------------------------------------------------------------------------


def test_main_exits_with_the_command_return_value(capsys, monkeypatch):
    monkeypatch.setitem(cli_module.cli.commands, "three", click.Command("three", callback=lambda: 3))
    monkeypatch.setitem(cli_module.cli.commands, "none", click.Command("none", callback=lambda: None))
    assert run_cli(capsys, "three")[0] == 3
    assert run_cli(capsys, "none")[0] == 0


def test_bad_frame_size_is_one_line_for_compile_and_bench(capsys, tmp_path, colour_onnx):
    from edgetl.cli import bench as cli_bench
    from edgetl.cli import deploy as cli_deploy

    assert cli_bench.parse_frame_size is cli_deploy.parse_frame_size
    code, _, err = run_cli(
        capsys, "compile", colour_onnx, "--target", "openvino", "--out", tmp_path / "o", "--frame-size", "big"
    )
    assert code == 2 and "--frame-size 'big'" in err and "Traceback" not in err
    assert cli_deploy.parse_frame_size("480x640") == (480, 640)


def test_openvino_precision_names_are_shared():
    from edgetl.deploy.targets.ov_runner import HINTS, precision_name

    assert [precision_name(HINTS[p]) for p in HINTS] == list(HINTS)
    assert precision_name("i8") == "i8"


def test_cache_root_expands_the_home_folder(monkeypatch):
    from edgetl.fileio import cache_root

    monkeypatch.setenv("EDGETL_CACHE_DIR", "~/edgetl-cache-test")
    assert cache_root() == Path.home() / "edgetl-cache-test"
