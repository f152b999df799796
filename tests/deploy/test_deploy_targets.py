"""OpenVINO and ONNX Runtime for real: compile, package, load on the device path, compare with NumPy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgetl.deploy.bundle import package
from edgetl.deploy.predictor import Predictor
from edgetl.deploy.targets import CompileOptions, Runner, get_target, registry
from edgetl.errors import UserError
from edgetl.images import decode_image
from tests.deploy.conftest import CLASSES, COLOURS, reference_probs


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((16, 16), (23, 41), (64, 9))]


# bf16 (OpenVINO's default on AMX CPUs) keeps ~3 significant digits; f32 and ORT agree to float rounding.
CASES = [
    ("onnxruntime", "colour_onnx", CompileOptions(), 1e-5),
    ("onnxruntime", "colour_float_onnx", CompileOptions(threads=1), 1e-5),
    ("openvino", "colour_onnx", CompileOptions(), 2e-2),
    ("openvino", "colour_onnx", CompileOptions(precision="fp32"), 1e-5),
    ("openvino", "colour_float_onnx", CompileOptions(precision="fp32"), 1e-5),
    ("openvino", "colour_onnx", CompileOptions(static=True, frame_size=(16, 16), precision="fp32"), 1e-2),
]


@pytest.mark.parametrize(("target", "model", "options", "atol"), CASES)
def test_compiled_model_matches_numpy(request, tmp_path, target, model, options, atol):
    onnx_path = request.getfixturevalue(model)
    artifact = get_target(target).compile(onnx_path, tmp_path / "out", options)
    m = artifact.manifest
    assert m["target"] == target and m["classes"] == CLASSES and set(m["files"]) >= {m["model"]}
    assert m["runtime"][target] and m["precision"]["model"] == "fp32"
    package(artifact.root, tmp_path / "b.tar.gz")
    with Predictor(tmp_path / "b.tar.gz") as predictor:
        assert isinstance(predictor.runner, Runner)
        for frame in _frames():
            p = predictor.predict_frame(frame, top_k=3)
            np.testing.assert_allclose(dict(p.topk)[p.class_name], reference_probs(frame)[p.label], atol=atol)
            assert [name for name, _ in p.topk][0] == p.class_name


def test_openvino_records_the_precision_it_really_runs(tmp_path, colour_onnx):
    auto = get_target("openvino").compile(colour_onnx, tmp_path / "auto", CompileOptions()).manifest
    forced = get_target("openvino").compile(colour_onnx, tmp_path / "f32", CompileOptions(precision="fp32")).manifest
    assert auto["settings"]["inference_precision_hint"] is None
    assert auto["precision"]["runtime"] in ("bf16", "fp32", "fp16")  # what the CPU plugin picked here
    assert forced["settings"]["inference_precision_hint"] == "f32" and forced["precision"]["runtime"] == "fp32"
    assert auto["settings"]["performance_hint"] == "LATENCY"


def test_openvino_static_variant_and_cache(tmp_path, colour_onnx):
    artifact = get_target("openvino").compile(
        colour_onnx, tmp_path / "npu", CompileOptions(static=True, frame_size=(24, 32))
    )
    assert artifact.manifest["input"]["shape"] == [1, 24, 32, 3] and artifact.manifest["input"]["frame_size"] == [
        24,
        32,
    ]
    with Predictor(artifact.root) as predictor:
        assert predictor.feeds(np.zeros((50, 60, 3), np.uint8))["image"].shape == (1, 24, 32, 3)
        predictor.predict_frame(np.zeros((50, 60, 3), np.uint8))
    import openvino

    from edgetl.deploy.targets.ov_runner import model_cache_dir

    cache = model_cache_dir("CPU")
    assert list(cache.glob("*.blob"))
    assert cache.parts[-3:] == ("openvino", openvino.get_version().split("-")[0], "CPU")


@pytest.mark.parametrize("target", ["openvino", "onnxruntime"])
def test_int8_models_label_real_images(tmp_path, images, colour_int8_onnx, target):
    artifact = get_target(target).compile(colour_int8_onnx, tmp_path / "int8", CompileOptions(precision="int8"))
    assert artifact.manifest["precision"]["model"] == "int8"
    if target == "openvino":  # read off the execution graph: the quantized convolutions ran in int8
        assert artifact.manifest["precision"]["runtime"].startswith("int8 + ")
    with Predictor(artifact.root) as predictor:
        for name in COLOURS:
            frame = decode_image(images[name].read_bytes())
            p = predictor.predict_frame(frame)
            assert p.class_name == name
            assert abs(p.prob - reference_probs(frame)[p.label]) < 0.05


def test_precision_errors_name_the_option(tmp_path, colour_onnx):
    with pytest.raises(UserError, match="--precision int8: .* no INT8 nodes"):
        get_target("openvino").compile(colour_onnx, tmp_path / "x", CompileOptions(precision="int8"))
    with pytest.raises(UserError, match="--precision bf16: not supported by --target onnxruntime"):
        get_target("onnxruntime").compile(colour_onnx, tmp_path / "x", CompileOptions(precision="bf16"))
    with pytest.raises(UserError, match="--precision: unknown"):
        CompileOptions(precision="fp64")
    with pytest.raises(UserError, match="--tokenizer: unknown"):
        CompileOptions(tokenizer="remote")
    for target in ("openvino", "onnxruntime", "tensorrt"):  # the tokenizer option is for text models only
        with pytest.raises(UserError, match="--tokenizer host: .* classifies images"):
            get_target(target).compile(colour_onnx, tmp_path / "t", CompileOptions(tokenizer="host"))
        assert not (tmp_path / "t").exists()
    with pytest.raises(UserError, match="--static-tokens: .* classifies images"):
        get_target("openvino").compile(colour_onnx, tmp_path / "t", CompileOptions(static_tokens=12))
    with pytest.raises(UserError, match="--static-tokens: -1 is negative"):
        CompileOptions(static_tokens=-1)
    assert not (tmp_path / "t").exists() and not (tmp_path / "x").exists()


def test_device_errors(tmp_path, colour_onnx):
    with pytest.raises(UserError, match="--device TPU"):
        get_target("onnxruntime").compile(colour_onnx, tmp_path / "x", CompileOptions(device="TPU"))
    artifact = get_target("openvino").compile(colour_onnx, tmp_path / "gpu", CompileOptions(device="GPU"))
    assert artifact.manifest["build"]["checked"] is False  # no GPU here: compiled on the device at load
    with pytest.raises(UserError, match="--device GPU: OpenVINO cannot compile for it here"):
        get_target("openvino").load(artifact)


def test_fused_kernels_hook_fails_clearly_without_native_ops(tmp_path, colour_onnx):
    from edgetl.deploy.targets.ov_runner import native_extension

    try:
        path = native_extension()
    except UserError as e:
        assert "--fused-kernels" in str(e)
        return
    artifact = get_target("openvino").compile(colour_onnx, tmp_path / "fused", CompileOptions(fused_kernels=True))
    assert artifact.manifest["settings"]["extension"] == f"extensions/{path.name}"


def test_out_folder_is_replaced_atomically_and_never_clobbers_user_files(tmp_path, colour_onnx):
    target = get_target("onnxruntime")
    first = target.compile(colour_onnx, tmp_path / "out", CompileOptions()).manifest
    second = target.compile(colour_onnx, tmp_path / "out", CompileOptions(threads=1)).manifest
    assert second["settings"]["intra_op_num_threads"] == 1 != first["settings"]["intra_op_num_threads"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not an edgetl build folder"):
        target.compile(colour_onnx, tmp_path / "mine", CompileOptions())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_every_target_is_registered_and_reports_itself():
    assert registry().names() == ["onnxruntime", "openvino", "tensorrt"]
    for name in registry():
        target = get_target(name)
        problem = target.available()
        assert problem is None or "pip install 'edgetl[" in problem
        assert isinstance(target.devices(), list)
    with pytest.raises(UserError, match="did you mean 'openvino'"):
        get_target("openvin")


LEAN_OPENVINO = """
import sys
from edgetl.deploy.targets import get_target
assert get_target("openvino").available() is None
assert "openvino" in sys.modules and "openvino.tools.ovc" not in sys.modules, "the device side loaded the converter"
import openvino as ov
model = ov.convert_model(sys.argv[1])  # host code in the same process still converts
print([port.get_any_name() for port in model.outputs])
"""


def test_openvino_loads_without_its_converter_and_still_converts(colour_onnx):
    """`edgetl predict` imports OpenVINO without openvino.tools.ovc (~90 ms of a one-image predict; ov_runner's
    import_openvino); `ov.convert_model` then loads it on first call. Checked in a fresh process: only the first
    import of openvino in a process decides."""
    done = subprocess.run([sys.executable, "-c", LEAN_OPENVINO, str(colour_onnx)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "probs" in done.stdout and "label" in done.stdout
